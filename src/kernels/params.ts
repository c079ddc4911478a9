/**
 * Uniform parameter structs, declared once as a typed field list. The same list produces the
 * bytes written to the GPU and is checked against the WGSL `struct` of the same name by a test
 * (tests/kernels/layouts.test.ts), so the TypeScript and WGSL sides cannot drift apart.
 *
 * Only 4-byte scalars are used (u32, i32, f32): every field sits at offset 4·index, and the struct
 * is padded to a multiple of 16 bytes as uniform buffers require.
 */
export type ScalarType = 'u32' | 'i32' | 'f32';

export interface ParamsLayout<F extends string = string> {
  /** Name of the WGSL struct this layout mirrors. */
  readonly struct: string;
  readonly fields: readonly (readonly [F, ScalarType])[];
  /** Bytes of the uniform buffer (multiple of 16). */
  readonly byteSize: number;
}

export type ParamsValues<L extends ParamsLayout> = L extends ParamsLayout<infer F> ? Record<F, number> : never;

export function defineParams<const F extends string>(
  struct: string,
  fields: readonly (readonly [F, ScalarType])[],
): ParamsLayout<F> {
  const byteSize = Math.max(16, Math.ceil((fields.length * 4) / 16) * 16);
  return Object.freeze({ struct, fields, byteSize });
}

/** Encodes values into the struct's bytes; a missing, non-finite or out-of-range value throws. */
export function packParams<F extends string>(layout: ParamsLayout<F>, values: Record<F, number>): ArrayBuffer {
  const bytes = new ArrayBuffer(layout.byteSize);
  const view = new DataView(bytes);
  layout.fields.forEach(([name, type], i) => {
    const v = values[name];
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new TypeError(`${layout.struct}.${name}: expected a finite number, got ${String(v)}`);
    }
    if (type === 'u32') {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${layout.struct}.${name}: ${v} is not a u32`);
      view.setUint32(i * 4, v, true);
    } else if (type === 'i32') {
      if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new RangeError(`${layout.struct}.${name}: ${v} is not an i32`);
      view.setInt32(i * 4, v, true);
    } else {
      view.setFloat32(i * 4, v, true);
    }
  });
  return bytes;
}
