/*
 * Runs llama.cpp's own quantiser (ggml_quantize_chunk from the libggml-base.so that node-llama-cpp
 * ships, the function llama-quantize calls) on f32 rows, for the bit-exactness test of
 * src/export/gguf-quants.ts. Usage: harness TYPE_ID N_PER_ROW NROWS IN.f32 OUT.bin
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

size_t ggml_quantize_chunk(int type, const float * src, void * dst, int64_t start, int64_t nrows, int64_t n_per_row, const float * imatrix);

int main(int argc, char ** argv) {
    if (argc != 6) { fprintf(stderr, "usage: %s TYPE N_PER_ROW NROWS IN OUT\n", argv[0]); return 2; }
    const int type = atoi(argv[1]);
    const int64_t n_per_row = atoll(argv[2]);
    const int64_t nrows = atoll(argv[3]);
    const int64_t n = n_per_row * nrows;
    float * src = malloc(n * sizeof(float));
    void * dst = malloc(n * sizeof(float) + 1024);
    FILE * in = fopen(argv[4], "rb");
    if (!in || fread(src, sizeof(float), n, in) != (size_t) n) { fprintf(stderr, "cannot read %s\n", argv[4]); return 1; }
    fclose(in);
    const size_t bytes = ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, NULL);
    FILE * out = fopen(argv[5], "wb");
    if (!out || fwrite(dst, 1, bytes, out) != bytes) { fprintf(stderr, "cannot write %s\n", argv[5]); return 1; }
    fclose(out);
    return 0;
}
