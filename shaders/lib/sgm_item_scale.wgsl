// Row scale of staging item i of the f16 left operand (X in matmul_sgm_forward, dY in
// matmul_sgm_input: items of 4 elements of a row, BK / 4 to a row): its row's rowS, 0 past the
// items. With straight-line staging each invocation's items keep their rows for the whole
// reduction, so main reads the scales once into registers. Reading rowS[r] from workgroup memory
// at every K step instead halved the forward kernel's speed on an H200 (2026-12-02: 49 against
// 91–94 TFLOP/s at gate/up and q_proj, same call).
// Not self-contained: the including shader declares `override BK: u32`, `override X_ITEMS: u32`
// (the items of the tile) and `var<workgroup> rowS: array<f32, …>` (the tile's row scales).
fn itemScale(i: u32) -> f32 {
  if (i >= X_ITEMS) {
    return 0.0;
  }
  return rowS[i / (BK / 4u)];
}
