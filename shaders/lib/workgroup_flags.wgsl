// Workgroup-wide flag bits made uniform for branching around barriers (the subgroup-matrix flash
// attention: bit 0 "this tile has work", bit 1 "a row needs a rescale"). Invocations set bits with
// atomicOr(&flags, bit); takeFlags then returns the union to every invocation as a uniform value
// (workgroupUniformLoad) and clears the flags for the next phase. Every invocation must have set
// its bits before it calls takeFlags; the flags start cleared (atomicStore(&flags, 0u) and a
// barrier at the top of main).

var<workgroup> flags: atomic<u32>;
var<workgroup> flagsCopy: u32;

fn takeFlags(lid: u32) -> u32 {
  workgroupBarrier();
  if (lid == 0u) {
    flagsCopy = atomicExchange(&flags, 0u);
  }
  return workgroupUniformLoad(&flagsCopy);
}
