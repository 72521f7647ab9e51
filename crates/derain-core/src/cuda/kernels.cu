// Frame <-> tensor conversion on the GPU, the same arithmetic as src/frame.rs (the reference):
// compiled by NVRTC with --fmad=false so no multiply-add is fused and every float operation
// rounds as the CPU code's does. Device planes are tightly packed (pitch = bytes per row).
// Tensors are float32 [3, hp, wp], planes R, G, B; the image is the top-left w x h region and the
// rest is reflect padding (mirror without repeating the edge, repeatedly when wider than the
// image).

__device__ __forceinline__ int reflect_index(int i, int n) {
    if (i < n) return i;
    if (n <= 1) return 0;
    int period = 2 * (n - 1);
    int m = i % period;
    return m < n ? m : period - m;
}

// fmaxf first: NaN becomes 0, as clamp01 in frame.rs.
__device__ __forceinline__ float clamp01(float v) { return fminf(fmaxf(v, 0.0f), 1.0f); }

// x in [0, 255.5] -> floor, 255.5 -> 255 (frame.rs floor_in_range).
__device__ __forceinline__ unsigned char floor_byte(float x) {
    int q = (int)x;
    return (unsigned char)(q > 255 ? 255 : q);
}

// frame.rs to_u8: clamp to [0,1], then (v * 255 + 0.5) floored.
__device__ __forceinline__ unsigned char to_u8(float v) {
    float s = clamp01(v) * 255.0f;
    return floor_byte(s + 0.5f);
}

// frame.rs floor_u8: clamp to [0,255] (NaN to 0), then floor.
__device__ __forceinline__ unsigned char floor_u8(float x) {
    return floor_byte(fminf(fmaxf(x, 0.0f), 255.0f));
}

// One thread per tensor pixel (padding included).
extern "C" __global__ void packed_to_tensor(const unsigned char* src, int pitch, int bpp, int ro,
                                            int go, int bo, int w, int h, int wp, int hp,
                                            float* dst) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long plane = (long long)wp * hp;
    if (i >= plane) return;
    int x = (int)(i % wp), y = (int)(i / wp);
    const unsigned char* p =
        src + (long long)reflect_index(y, h) * pitch + (long long)reflect_index(x, w) * bpp;
    dst[i] = (float)p[ro] / 255.0f;
    dst[plane + i] = (float)p[go] / 255.0f;
    dst[2 * plane + i] = (float)p[bo] / 255.0f;
}

// lut: 5 x 256 floats: Y, R-from-V, G-from-U, G-from-V, B-from-U (frame.rs YuvDecode).
// I420: u and v are separate planes of pitch cpitch; NV12 (interleaved != 0): u is the UV plane
// and v is unused. Chroma is upsampled nearest.
extern "C" __global__ void yuv_to_tensor(const unsigned char* yp, int ypitch,
                                         const unsigned char* up, const unsigned char* vp,
                                         int cpitch, int interleaved, const float* lut, int w,
                                         int h, int wp, int hp, float* dst) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long plane = (long long)wp * hp;
    if (i >= plane) return;
    int x = reflect_index((int)(i % wp), w), y = reflect_index((int)(i / wp), h);
    int cx = x / 2, cy = y / 2;
    int Y = yp[(long long)y * ypitch + x];
    int U, V;
    if (interleaved) {
        const unsigned char* uv = up + (long long)cy * cpitch + 2 * cx;
        U = uv[0];
        V = uv[1];
    } else {
        U = up[(long long)cy * cpitch + cx];
        V = vp[(long long)cy * cpitch + cx];
    }
    float yv = lut[Y];
    float cr = lut[256 + V];
    float cg = lut[512 + U] + lut[768 + V];
    float cb = lut[1024 + U];
    dst[i] = clamp01(yv + cr);
    dst[plane + i] = clamp01(yv - cg);
    dst[2 * plane + i] = clamp01(yv + cb);
}

// One thread per image pixel; writes the R, G and B bytes only (alpha and padding bytes keep
// what the buffer holds).
extern "C" __global__ void tensor_to_packed(const float* src, int wp, int hp, unsigned char* dst,
                                            int pitch, int bpp, int ro, int go, int bo, int w,
                                            int h) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)w * h) return;
    int x = (int)(i % w), y = (int)(i / w);
    long long plane = (long long)wp * hp;
    long long t = (long long)y * wp + x;
    unsigned char* p = dst + (long long)y * pitch + (long long)x * bpp;
    p[ro] = to_u8(src[t]);
    p[go] = to_u8(src[plane + t]);
    p[bo] = to_u8(src[2 * plane + t]);
}

struct Rgb {
    float r, g, b;
};

__device__ __forceinline__ Rgb clamped(const float* src, long long plane, int wp, int x, int y) {
    long long t = (long long)y * wp + x;
    Rgb c = {clamp01(src[t]), clamp01(src[plane + t]), clamp01(src[2 * plane + t])};
    return c;
}

// k: Y, U and V weights of R, G, B (9 floats), then the Y and chroma offsets (frame.rs YuvEncode).
__device__ __forceinline__ unsigned char luma(const float* k, Rgb c) {
    float s = k[9] + k[0] * c.r;
    s = s + k[1] * c.g;
    s = s + k[2] * c.b;
    return floor_u8(s);
}

// One thread per chroma sample: the Y of its (up to) 2x2 pixels, and U, V from the mean of their
// clamped colours. An odd height's last chroma row pairs its one image row with itself, an odd
// width's last column averages its two pixels, as in frame.rs.
extern "C" __global__ void tensor_to_yuv(const float* src, int wp, int hp, unsigned char* yp,
                                         int ypitch, unsigned char* up, unsigned char* vp,
                                         int cpitch, int interleaved, const float* k, int w,
                                         int h) {
    int cw = (w + 1) / 2, ch = (h + 1) / 2;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)cw * ch) return;
    int cx = (int)(i % cw), cy = (int)(i / cw);
    long long plane = (long long)wp * hp;
    int y0 = 2 * cy, y1 = 2 * cy + 1 < h ? 2 * cy + 1 : 2 * cy;
    int x0 = 2 * cx;
    bool pair = x0 + 1 < w;
    // Column sums, top then bottom, as frame.rs luma_chunk accumulates them.
    Rgb t0 = clamped(src, plane, wp, x0, y0), b0 = clamped(src, plane, wp, x0, y1);
    Rgb s0 = {t0.r + b0.r, t0.g + b0.g, t0.b + b0.b};
    yp[(long long)y0 * ypitch + x0] = luma(k, t0);
    if (y1 != y0) yp[(long long)y1 * ypitch + x0] = luma(k, b0);
    Rgb sum;
    float scale;
    if (pair) {
        Rgb t1 = clamped(src, plane, wp, x0 + 1, y0), b1 = clamped(src, plane, wp, x0 + 1, y1);
        Rgb s1 = {t1.r + b1.r, t1.g + b1.g, t1.b + b1.b};
        yp[(long long)y0 * ypitch + x0 + 1] = luma(k, t1);
        if (y1 != y0) yp[(long long)y1 * ypitch + x0 + 1] = luma(k, b1);
        sum.r = s0.r + s1.r;
        sum.g = s0.g + s1.g;
        sum.b = s0.b + s1.b;
        scale = 0.25f;
    } else {
        sum = s0;
        scale = 0.5f;
    }
    float r = sum.r * scale, g = sum.g * scale, b = sum.b * scale;
    float u = k[10] + k[3] * r;
    u = u + k[4] * g;
    u = u + k[5] * b;
    float v = k[10] + k[6] * r;
    v = v + k[7] * g;
    v = v + k[8] * b;
    if (interleaved) {
        unsigned char* uv = up + (long long)cy * cpitch + 2 * cx;
        uv[0] = floor_u8(u);
        uv[1] = floor_u8(v);
    } else {
        up[(long long)cy * cpitch + cx] = floor_u8(u);
        vp[(long long)cy * cpitch + cx] = floor_u8(v);
    }
}

// The rain level (runtime::mean_abs_diff): one thread per sampled row of one channel sums
// |a - b| over every step-th column in float, then adds the row's sum to *out in double.
extern "C" __global__ void abs_diff_rows(const float* a, const float* b, int hp, int wp, int h,
                                         int w, int step, double* out) {
    int rows = (h + step - 1) / step;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= 3 * rows) return;
    int c = i / rows, y = (i % rows) * step;
    long long row = (long long)c * hp * wp + (long long)y * wp;
    float s = 0.0f;
    for (int x = 0; x < w; x += step) s += fabsf(a[row + x] - b[row + x]);
    atomicAdd(out, (double)s);
}
