/**
 * The dimension letters used in every shape comment, kernel and test of this project.
 *
 *   B   batch rows                      T   tokens per row (sequence length)
 *   N   B·T, tokens in a batch          D   hidden size (residual stream width)
 *   H   query heads                     Hkv key/value heads (GQA: H is a multiple of Hkv)
 *   Dh  head dimension                  F   MLP width (intermediate_size)
 *   V   vocabulary size                 L   decoder layers
 *   R   LoRA rank                       K   reduction (input) width of a projection
 *   M   rows of a matmul (= N tokens)   Nout output width of a projection
 *
 * Activations are row-major f32 with tokens as rows: (N, D) means N rows of D floats.
 * Linear weights follow PyTorch: W is (Nout, K) row-major and y = x·Wᵀ.
 */
export type Dim = number;
