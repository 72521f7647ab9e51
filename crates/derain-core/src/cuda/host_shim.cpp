// Runs kernels.cu on the CPU, one simulated thread at a time, so its arithmetic can be checked
// against src/frame.rs on machines without a GPU (src/cuda_host_tests.rs builds this with the
// system's C++ compiler, -ffp-contract=off like NVRTC's --fmad=false). Not used at run time.
#include <math.h>

struct Dim3 {
    unsigned x, y, z;
};
static Dim3 blockIdx, blockDim, threadIdx;

#define __global__
#define __device__
#define __forceinline__ inline
static inline double atomicAdd(double* a, double v) {
    double old = *a;
    *a = old + v;
    return old;
}

#include "kernels.cu"

template <typename... A, typename... B>
static void launch(void (*kernel)(A...), long long threads, B... args) {
    const unsigned block = 256;
    blockDim.x = block;
    for (long long b = 0; b * block < threads; ++b) {
        blockIdx.x = (unsigned)b;
        for (unsigned t = 0; t < block; ++t) {
            threadIdx.x = t;
            kernel(args...);
        }
    }
}

extern "C" void host_packed_to_tensor(long long n, const unsigned char* src, int pitch, int bpp,
                                      int ro, int go, int bo, int w, int h, int wp, int hp,
                                      float* dst) {
    launch(packed_to_tensor, n, src, pitch, bpp, ro, go, bo, w, h, wp, hp, dst);
}

extern "C" void host_yuv_to_tensor(long long n, const unsigned char* yp, int ypitch,
                                   const unsigned char* up, const unsigned char* vp, int cpitch,
                                   int interleaved, const float* lut, int w, int h, int wp, int hp,
                                   float* dst) {
    launch(yuv_to_tensor, n, yp, ypitch, up, vp, cpitch, interleaved, lut, w, h, wp, hp, dst);
}

extern "C" void host_tensor_to_packed(long long n, const float* src, int wp, int hp,
                                      unsigned char* dst, int pitch, int bpp, int ro, int go,
                                      int bo, int w, int h) {
    launch(tensor_to_packed, n, src, wp, hp, dst, pitch, bpp, ro, go, bo, w, h);
}

extern "C" void host_tensor_to_yuv(long long n, const float* src, int wp, int hp,
                                   unsigned char* yp, int ypitch, unsigned char* up,
                                   unsigned char* vp, int cpitch, int interleaved, const float* k,
                                   int w, int h) {
    launch(tensor_to_yuv, n, src, wp, hp, yp, ypitch, up, vp, cpitch, interleaved, k, w, h);
}

extern "C" void host_abs_diff_rows(long long n, const float* a, const float* b, int hp, int wp,
                                   int h, int w, int step, double* out) {
    launch(abs_diff_rows, n, a, b, hp, wp, h, w, step, out);
}
