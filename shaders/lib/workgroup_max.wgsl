// The largest of every invocation's `a` over the workgroup, returned to each: a tree in workgroup
// memory (used by the per-row and per-head f16 scales: row_scale, head_scale, f16_pack, on the
// sign-cleared f32 bits). Not self-contained: the including shader declares `override WG: u32` (a
// power of two, its workgroup size) and `var<workgroup> partial: array<u32, WG>`. It has barriers:
// call it once per workgroup, from uniform control flow, with every invocation.
fn workgroupMaxU32(lid: u32, a: u32) -> u32 {
  partial[lid] = a;
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid < h) {
      partial[lid] = max(partial[lid], partial[lid + h]);
    }
    workgroupBarrier();
  }
  return partial[0];
}
