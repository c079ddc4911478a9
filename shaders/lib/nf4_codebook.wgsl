// bitsandbytes' NF4 codebook as f32 bit patterns (index = 4-bit code); the TypeScript twin is
// NF4_CODE in src/kernels/nf4.ts (tests/kernels/shader-source.test.ts checks they agree).
const NF4_CODEBOOK = array<u32, 16>(
  0xbf800000u, 0xbf3239b1u, 0xbf066b30u, 0xbeca32a0u, 0xbe91a24du, 0xbe3d353fu, 0xbdba7871u, 0x00000000u,
  0x3da2faffu, 0x3e24cae3u, 0x3e7c04ddu, 0x3ead033au, 0x3ee1a4b8u, 0x3f1007abu, 0x3f3913b3u, 0x3f800000u,
);
