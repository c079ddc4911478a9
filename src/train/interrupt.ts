/**
 * Ctrl-C during training. The CLI creates one Interrupt and passes it to the loop, which polls
 * `requested` after every optimiser step: the first SIGINT lets the current step finish, the loop
 * writes a checkpoint (reason 'interrupt') and returns, and the command exits with 130. A second
 * SIGINT exits at once with 130 (the checkpoint being written, if any, stays under its temporary
 * name and is ignored by --resume).
 *
 * No globals: the handler is installed on the process object given and removed by dispose().
 */

/** What the loop polls. */
export interface InterruptSignal {
  readonly requested: boolean;
}

/** Exit status of a run stopped by SIGINT (128 + 2, as shells report it). */
export const INTERRUPT_EXIT_CODE = 130;

export class Interrupt implements InterruptSignal {
  private count = 0;

  get requested(): boolean {
    return this.count > 0;
  }

  /** Records one request; returns how many there have been (1 on the first). */
  request(): number {
    return ++this.count;
  }
}

/** The process calls listenForInterrupt needs (a NodeJS.Process satisfies it). */
export interface SignalSource {
  on(event: 'SIGINT', listener: () => void): unknown;
  off(event: 'SIGINT', listener: () => void): unknown;
}

/**
 * Installs the SIGINT handler: the first signal sets `interrupt` and calls `onFirst` (to print what
 * happens next), a second calls `onSecond` (the CLI passes one that exits with 130).
 */
export function listenForInterrupt(
  source: SignalSource,
  interrupt: Interrupt,
  handlers: { onFirst: () => void; onSecond: () => void },
): { dispose: () => void } {
  const listener = (): void => {
    if (interrupt.request() === 1) handlers.onFirst();
    else handlers.onSecond();
  };
  source.on('SIGINT', listener);
  return { dispose: () => void source.off('SIGINT', listener) };
}
