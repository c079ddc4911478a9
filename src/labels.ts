/**
 * Label value of a position without loss: transformers' (and torch.nn.CrossEntropyLoss's)
 * ignore_index. The one definition: batching writes it, the loss kernels skip it
 * (shaders/cross_entropy_*.wgsl compare the i32 target with -100), the forward validates it.
 */
export const IGNORE_INDEX = -100;
