// Workgroup-wide flag bits made uniform for branching around barriers (the subgroup-matrix flash
// attention: bit 0 "this tile has work", bit 1 "a row needs a rescale"). Invocations set bits with
// raiseFlag(bit); takeFlags then returns the union to every invocation as a uniform value
// (workgroupUniformLoad) and clears the flags for the next phase. Every invocation must have set
// its bits before it calls takeFlags; the flags start cleared (clearFlags() by one invocation and a
// barrier at the top of main).
//
// The state is one 16-byte struct, not two 4-byte variables: the driver places workgroup variables
// where it likes, and a variable whose size is not a multiple of 16 bytes can leave an f16 tile at
// an address that is not 16-byte aligned, which the tensor-core fragment loads do not honour (they
// read from the address rounded down). Every workgroup variable of a shader that loads subgroup
// matrices from workgroup memory keeps a size that is a multiple of 16 bytes
// (tests/kernels/workgroup-alignment.test.ts checks the shaders).

struct WorkgroupFlags {
  bits: atomic<u32>,
  copy: u32,
  pad: vec2<u32>,
}

var<workgroup> wgFlags: WorkgroupFlags;

fn clearFlags() {
  atomicStore(&wgFlags.bits, 0u);
}

fn raiseFlag(bit: u32) {
  atomicOr(&wgFlags.bits, bit);
}

fn takeFlags(lid: u32) -> u32 {
  workgroupBarrier();
  if (lid == 0u) {
    wgFlags.copy = atomicExchange(&wgFlags.bits, 0u);
  }
  return workgroupUniformLoad(&wgFlags.copy);
}
