// One matrix product on ggml's CPU backend, timed: weights of a quantized type [K x M] times N
// activation rows, on T threads of a persistent thread pool; the best of REPS runs and the mean.
// Measures the Q4_1 tiles of patches/llama.cpp-q4_1-tiles.patch against llama.cpp's one-row
// kernel (GGML_Q4_1_TILES=0) on the built wheel's libraries (docs/PERFORMANCE.md):
//
//   L=.venv/lib/python3.11/site-packages/llama_cpp/lib
//   gcc -O2 -o /tmp/matmul_probe bench/matmul_probe.c \
//       -I build/src/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/include \
//       -L $L -lggml-cpu -lggml-base -lm -Wl,-rpath,$PWD/$L
//   GGML_Q4_1_TILES=0 /tmp/matmul_probe 576 1536 1 1; /tmp/matmul_probe 576 1536 1 1
//
// Arguments: K M N T [type, a ggml_type number: 3 is Q4_1 (the default), 8 Q8_0, 12 Q4_K].
// The checksum is the sum of the outputs: equal with the tiles on and off.
#include "ggml.h"
#include "ggml-cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s K M N T [type]\n", argv[0]);
        return 2;
    }
    const int K = atoi(argv[1]), M = atoi(argv[2]), N = atoi(argv[3]), T = atoi(argv[4]);
    const enum ggml_type type = argc > 5 ? (enum ggml_type) atoi(argv[5]) : GGML_TYPE_Q4_1;
    const int reps = getenv("REPS") ? atoi(getenv("REPS")) : 200;

    struct ggml_init_params ip = { .mem_size = (size_t) 1 << 30, .mem_buffer = NULL, .no_alloc = false };
    struct ggml_context * ctx = ggml_init(ip);
    struct ggml_tensor * w = ggml_new_tensor_2d(ctx, type, K, M);
    struct ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, N);
    float * values = malloc(sizeof(float) * (size_t) K * M);
    srand(1);
    for (long i = 0; i < (long) K * M; i++) values[i] = rand() / (float) RAND_MAX - 0.5f;
    ggml_quantize_chunk(type, values, w->data, 0, M, K, NULL);
    for (long i = 0; i < (long) K * N; i++) ((float *) x->data)[i] = rand() / (float) RAND_MAX - 0.5f;

    struct ggml_tensor * y = ggml_mul_mat(ctx, w, x);
    struct ggml_cgraph * graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(graph, y);
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(T);
    struct ggml_threadpool * pool = ggml_threadpool_new(&tpp);
    struct ggml_cplan plan = ggml_graph_plan(graph, T, pool);
    plan.work_data = malloc(plan.work_size + 64);

    double best = 1e9, total = 0;
    for (int r = 0; r < reps; r++) {
        const double t0 = now();
        ggml_graph_compute(graph, &plan);
        const double t = now() - t0;
        total += t;
        best = t < best ? t : best;
    }
    double checksum = 0;
    for (long i = 0; i < (long) M * N; i++) checksum += ((float *) y->data)[i];
    printf("K=%d M=%d N=%d T=%d: best %.1f us, mean %.1f us, %.2f ns per row and block of 32 (x T), "
           "checksum %.6f\n", K, M, N, T, best * 1e6, total / reps * 1e6,
           best * 1e9 * T / ((double) M * N * K / 32), checksum);
    ggml_threadpool_free(pool);
    return 0;
}
