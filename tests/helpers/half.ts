/** f16's spacing at |v| (2^-24 below its normal range): one rounding of a value converted to f16 is within it. */
export const halfUlp = (v: number): number => 2 ** (Math.max(Math.floor(Math.log2(Math.abs(v) || 2 ** -24)), -14) - 10);
