/**
 * Generated tokens → text, streamed, with stop strings. After each token the whole generated
 * sequence is decoded again (byte-level BPE: the text of a prefix of the tokens is a prefix of the
 * text, except for a multi-byte character whose bytes are not all there yet, shown as U+FFFD); the
 * part that is safe to show is handed out:
 *   - text up to the earliest occurrence of a stop string ends the generation, the stop string
 *     and everything after it dropped;
 *   - otherwise the longest tail that could still become the start of a stop string is held back,
 *     and so are trailing U+FFFD (an unfinished character).
 * Decoding the whole sequence per token is O(n²) in the tokens, negligible next to a forward pass
 * at the lengths generated here (hundreds of tokens).
 */
export class TextStream {
  private readonly ids: number[] = [];
  /** Characters handed out so far (a prefix of every later text). */
  private emitted = 0;
  private full = '';
  private stopAt: number | undefined;

  constructor(
    private readonly decode: (ids: readonly number[]) => string,
    private readonly stops: readonly string[],
  ) {
    if (stops.some((s) => s === '')) throw new RangeError('TextStream: an empty stop string would stop at once');
  }

  /** True once a stop string was found. */
  get stopped(): boolean {
    return this.stopAt !== undefined;
  }

  /** The text so far (up to the stop string when one was found). */
  get text(): string {
    return this.stopAt === undefined ? this.full : this.full.slice(0, this.stopAt);
  }

  /** Adds a generated token; returns the new text safe to show (possibly empty). */
  push(id: number): string {
    if (this.stopAt !== undefined) throw new RangeError('TextStream: push after a stop string');
    this.ids.push(id);
    this.full = this.decode(this.ids);
    let stop: number | undefined;
    for (const s of this.stops) {
      // A stop string cannot start before `emitted`: any tail that could begin one was held back.
      const at = this.full.indexOf(s, this.emitted);
      if (at >= 0 && (stop === undefined || at < stop)) stop = at;
    }
    if (stop !== undefined) {
      this.stopAt = stop;
      return this.take(stop);
    }
    let end = this.full.length;
    while (end > this.emitted && this.full.charCodeAt(end - 1) === 0xfffd) end--;
    let hold = 0;
    for (const s of this.stops) {
      for (let len = Math.min(s.length - 1, end - this.emitted); len > hold; len--) {
        if (this.full.endsWith(s.slice(0, len), end)) {
          hold = len;
          break;
        }
      }
    }
    const safe = end - hold;
    return this.take(safe);
  }

  /** At the end of generation without a stop string: whatever was held back. */
  flush(): string {
    return this.take(this.stopAt ?? this.full.length);
  }

  private take(end: number): string {
    const out = this.full.slice(this.emitted, end);
    this.emitted = Math.max(this.emitted, end);
    return out;
  }
}
