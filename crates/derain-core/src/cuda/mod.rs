//! Frames that cross to the GPU once (the `cuda` feature): a raw frame is copied to device memory
//! as it is, converted there into the model's float NCHW tensor with the reflect padding, and the
//! network's output is converted back to the frame's format on the device before one copy back.
//! The arithmetic is [`crate::frame`]'s (the reference), kernel for kernel; see `kernels.cu`.
//!
//! CUDA is loaded at run time (cudarc's dynamic loading): a build with this feature still runs on
//! a machine without CUDA, where [`CudaFrames::new`] returns an error naming what is missing. The
//! kernels are compiled with NVRTC on first use, once per process.

pub mod binding;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cudarc::driver::sys::{self, CUdeviceptr};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig,
    PushKernelArg,
};

use crate::frame::{self, FrameError, FrameLayout, PixelFormat, YuvColorimetry};

const KERNELS: &str = include_str!("kernels.cu");
const BLOCK: u32 = 256;

/// What stops frames from being converted on the GPU.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver (libcuda.so.1) on this machine")]
    NoDriver,
    #[error("CUDA sees no GPU number {device} ({count} found)")]
    NoDevice { device: usize, count: i32 },
    #[error(
        "NVRTC (libnvrtc.so) not found: the GPU frame conversion compiles its kernels with it; \
         `make setup GPU=1` and `source .deps/gpu.env`"
    )]
    NoNvrtc,
    #[error("compiling the frame conversion kernels failed: {0}")]
    Compile(String),
    #[error("CUDA: {0}")]
    Driver(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

fn driver(e: cudarc::driver::DriverError) -> CudaError {
    CudaError::Driver(e.to_string())
}

/// Whether this machine has a CUDA driver with at least one GPU: checked without creating a
/// context (which would panic inside cudarc where there is no driver).
pub fn gpu_present() -> Result<i32, CudaError> {
    // SAFETY: only tries to load the driver library.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    cudarc::driver::result::init().map_err(driver)?;
    let count = CudaContext::device_count().map_err(driver)?;
    if count < 1 {
        return Err(CudaError::NoDevice { device: 0, count });
    }
    Ok(count)
}

/// The kernels' PTX, compiled once per process.
fn ptx() -> Result<String, CudaError> {
    static PTX: OnceLock<Result<String, CudaError>> = OnceLock::new();
    PTX.get_or_init(|| {
        // SAFETY: only tries to load the NVRTC library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(CudaError::NoNvrtc);
        }
        let opts = cudarc::nvrtc::CompileOptions {
            // No fused multiply-add: the kernels round exactly as src/frame.rs does.
            fmad: Some(false),
            ftz: Some(false),
            prec_div: Some(true),
            name: Some("derain_frames.cu".into()),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(KERNELS, opts)
            .map_err(|e| CudaError::Compile(e.to_string()))?;
        log::info!(
            "compiled the GPU frame conversion kernels with NVRTC in {:.0} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(ptx.to_src())
    })
    .clone()
}

struct Kernels {
    packed_to_tensor: CudaFunction,
    yuv_to_tensor: CudaFunction,
    tensor_to_packed: CudaFunction,
    tensor_to_yuv: CudaFunction,
    abs_diff_rows: CudaFunction,
}

/// Frame conversion on one GPU: the compiled kernels, the device copies of a frame's planes
/// (tightly packed, reused from frame to frame) and the YUV tables per colorimetry.
pub struct CudaFrames {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    planes: Vec<CudaSlice<u8>>,
    decode: HashMap<YuvColorimetry, CudaSlice<f32>>,
    encode: HashMap<YuvColorimetry, CudaSlice<f32>>,
    level: CudaSlice<f64>,
}

impl std::fmt::Debug for CudaFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaFrames")
            .field("device", &self.ctx.ordinal())
            .finish()
    }
}

/// Bytes per row and rows of each plane of `layout`.
fn plane_shapes(layout: &FrameLayout) -> Result<Vec<(usize, usize)>, CudaError> {
    (0..layout.format.n_planes())
        .map(|p| {
            layout
                .plane_geometry(p)
                .ok_or(CudaError::Frame(FrameError::TooLarge {
                    format: layout.format,
                    width: layout.width,
                    height: layout.height,
                }))
        })
        .collect()
}

fn grid(n: usize) -> Result<LaunchConfig, CudaError> {
    let blocks = u32::try_from(n.div_ceil(BLOCK as usize))
        .map_err(|_| CudaError::Driver(format!("{n} threads are too many for one launch")))?;
    Ok(LaunchConfig {
        grid_dim: (blocks.max(1), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn int(v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Driver(format!("{v} does not fit a kernel argument")))
}

impl CudaFrames {
    /// Sets up conversion on CUDA device `device` (its primary context, which ONNX Runtime's CUDA
    /// provider shares), compiling the kernels if this process has not yet.
    pub fn new(device: usize) -> Result<Self, CudaError> {
        let count = gpu_present()?;
        if device >= count.max(0) as usize {
            return Err(CudaError::NoDevice { device, count });
        }
        let ptx = ptx()?;
        let ctx = CudaContext::new(device).map_err(driver)?;
        let stream = ctx.new_stream().map_err(driver)?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(driver)?;
        let f = |name: &str| module.load_function(name).map_err(driver);
        let kernels = Kernels {
            packed_to_tensor: f("packed_to_tensor")?,
            yuv_to_tensor: f("yuv_to_tensor")?,
            tensor_to_packed: f("tensor_to_packed")?,
            tensor_to_yuv: f("tensor_to_yuv")?,
            abs_diff_rows: f("abs_diff_rows")?,
        };
        let level = stream.alloc_zeros::<f64>(1).map_err(driver)?;
        Ok(Self {
            ctx,
            stream,
            kernels,
            planes: Vec::new(),
            decode: HashMap::new(),
            encode: HashMap::new(),
            level,
        })
    }

    /// The CUDA device (ordinal).
    pub fn device(&self) -> usize {
        self.ctx.ordinal()
    }

    /// Allocates `n` floats on this GPU (for tests and tensors not owned by ONNX Runtime).
    pub fn alloc_tensor(&self, n: usize) -> Result<CudaSlice<f32>, CudaError> {
        self.stream.alloc_zeros::<f32>(n).map_err(driver)
    }

    /// The device address of a tensor from [`CudaFrames::alloc_tensor`].
    pub fn tensor_ptr(&self, t: &mut CudaSlice<f32>) -> CUdeviceptr {
        let (ptr, _sync) = t.device_ptr_mut(&self.stream);
        ptr
    }

    /// Waits for everything queued on the conversion stream.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(driver)
    }

    /// Copies a frame's planes (with their strides) into tightly packed device planes.
    pub fn upload(&mut self, layout: &FrameLayout, planes: &[&[u8]]) -> Result<(), CudaError> {
        layout.check_planes(planes)?;
        let shapes = plane_shapes(layout)?;
        self.ctx.bind_to_thread().map_err(driver)?;
        for (p, &(row, rows)) in shapes.iter().enumerate() {
            if self.planes.len() <= p {
                self.planes
                    .push(self.stream.alloc_zeros::<u8>(row * rows).map_err(driver)?);
            } else if self.planes[p].len() < row * rows {
                self.planes[p] = self.stream.alloc_zeros::<u8>(row * rows).map_err(driver)?;
            }
            let (dst, _sync) = self.planes[p].device_ptr_mut(&self.stream);
            let copy = sys::CUDA_MEMCPY2D {
                srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_HOST,
                srcHost: planes[p].as_ptr().cast(),
                // A single-row plane may have any stride (FrameLayout::check_planes).
                srcPitch: if rows > 1 { layout.strides[p] } else { row },
                dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                dstDevice: dst,
                dstPitch: row,
                WidthInBytes: row,
                Height: rows,
                ..zeroed_copy()
            };
            // SAFETY: check_planes proved the host plane holds `rows` rows of `row` bytes at this
            // pitch, and the device plane was allocated for row*rows bytes.
            unsafe { check(sys::cuMemcpy2DAsync_v2(&copy, self.stream.cu_stream()))? };
        }
        Ok(())
    }

    /// Copies the tightly packed device planes into a frame's planes (with their strides);
    /// bytes past each row up to the stride are left untouched, as the CPU conversion does.
    pub fn download(
        &mut self,
        layout: &FrameLayout,
        planes: &mut [&mut [u8]],
    ) -> Result<(), CudaError> {
        layout.check_planes(planes)?;
        let shapes = plane_shapes(layout)?;
        if self.planes.len() < shapes.len()
            || shapes
                .iter()
                .zip(&self.planes)
                .any(|(&(r, n), d)| d.len() < r * n)
        {
            return Err(CudaError::Driver(
                "download before any upload of this frame size".into(),
            ));
        }
        self.ctx.bind_to_thread().map_err(driver)?;
        for (p, &(row, rows)) in shapes.iter().enumerate() {
            let (src, _sync) = self.planes[p].device_ptr(&self.stream);
            let copy = sys::CUDA_MEMCPY2D {
                srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                srcDevice: src,
                srcPitch: row,
                dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_HOST,
                dstHost: planes[p].as_mut_ptr().cast(),
                dstPitch: if rows > 1 { layout.strides[p] } else { row },
                WidthInBytes: row,
                Height: rows,
                ..zeroed_copy()
            };
            // SAFETY: as in `upload`, with the roles swapped.
            unsafe { check(sys::cuMemcpy2DAsync_v2(&copy, self.stream.cu_stream()))? };
        }
        // The host planes are read by the caller as soon as this returns.
        self.synchronize()
    }

    fn decode_tables(&mut self, c: YuvColorimetry) -> Result<CUdeviceptr, CudaError> {
        if !self.decode.contains_key(&c) {
            let t = self
                .stream
                .clone_htod(&frame::yuv_decode_tables(c))
                .map_err(driver)?;
            self.decode.insert(c, t);
        }
        let t = &self.decode[&c];
        let (ptr, _sync) = t.device_ptr(&self.stream);
        Ok(ptr)
    }

    fn encode_coefficients(&mut self, c: YuvColorimetry) -> Result<CUdeviceptr, CudaError> {
        if !self.encode.contains_key(&c) {
            let k = self
                .stream
                .clone_htod(&frame::yuv_encode_coefficients(c))
                .map_err(driver)?;
            self.encode.insert(c, k);
        }
        let k = &self.encode[&c];
        let (ptr, _sync) = k.device_ptr(&self.stream);
        Ok(ptr)
    }

    fn plane_ptrs(&self, n: usize) -> Vec<CUdeviceptr> {
        self.planes[..n]
            .iter()
            .map(|p| p.device_ptr(&self.stream).0)
            .collect()
    }

    /// Converts the uploaded frame into the float tensor at `dst` (`3*hp*wp` floats on this GPU,
    /// hp and wp from [`frame::padded_size`] for `multiple_of`), reflect padding included.
    /// Returns (hp, wp). Queued on the conversion stream; see [`CudaFrames::synchronize`].
    ///
    /// # Safety
    /// `dst` must be device memory of this context holding at least `3*hp*wp` floats, not in use
    /// by other work while the conversion runs.
    pub unsafe fn to_tensor(
        &mut self,
        layout: &FrameLayout,
        multiple_of: u32,
        dst: CUdeviceptr,
    ) -> Result<(usize, usize), CudaError> {
        let (hp, wp) = frame::padded_size(layout.height, layout.width, multiple_of);
        let n = layout.tensor_len(multiple_of)? / 3;
        let shapes = plane_shapes(layout)?;
        if self.planes.len() < shapes.len() {
            return Err(CudaError::Driver("convert before upload".into()));
        }
        let (w, h, wpi, hpi) = (int(layout.width)?, int(layout.height)?, int(wp)?, int(hp)?);
        let cfg = grid(n)?;
        let ptrs = self.plane_ptrs(shapes.len());
        match layout.format {
            PixelFormat::I420 | PixelFormat::Nv12 => {
                let lut = self.decode_tables(layout.colorimetry)?;
                let interleaved = i32::from(layout.format == PixelFormat::Nv12);
                let (ypitch, cpitch) = (int(shapes[0].0)?, int(shapes[1].0)?);
                let vp = if interleaved == 1 { ptrs[1] } else { ptrs[2] };
                let mut l = self.stream.launch_builder(&self.kernels.yuv_to_tensor);
                l.arg(&ptrs[0])
                    .arg(&ypitch)
                    .arg(&ptrs[1])
                    .arg(&vp)
                    .arg(&cpitch);
                l.arg(&interleaved)
                    .arg(&lut)
                    .arg(&w)
                    .arg(&h)
                    .arg(&wpi)
                    .arg(&hpi)
                    .arg(&dst);
                // SAFETY: the arguments match the kernel's signature; the planes hold the frame
                // just uploaded, and the caller vouches for `dst`.
                unsafe { l.launch(cfg) }.map_err(driver)?;
            }
            format => {
                let (bpp, [ro, go, bo]) = packed(format);
                let pitch = int(shapes[0].0)?;
                let mut l = self.stream.launch_builder(&self.kernels.packed_to_tensor);
                l.arg(&ptrs[0])
                    .arg(&pitch)
                    .arg(&bpp)
                    .arg(&ro)
                    .arg(&go)
                    .arg(&bo);
                l.arg(&w).arg(&h).arg(&wpi).arg(&hpi).arg(&dst);
                // SAFETY: as above.
                unsafe { l.launch(cfg) }.map_err(driver)?;
            }
        }
        Ok((hp, wp))
    }

    /// Converts the tensor at `src` (`3*hp*wp` floats) back into the device planes of a frame
    /// of `layout` (the top-left `width`×`height` region; values clamped and rounded as in
    /// [`frame::tensor_to_frame`]). For the RGB family only R, G and B bytes are written, so the
    /// alpha and padding bytes of the uploaded frame stay. Queued on the conversion stream;
    /// [`CudaFrames::download`] waits for it.
    ///
    /// # Safety
    /// `src` must be device memory of this context holding `3*hp*wp` floats, finished by
    /// whatever wrote it.
    pub unsafe fn from_tensor(
        &mut self,
        src: CUdeviceptr,
        hp: usize,
        wp: usize,
        layout: &FrameLayout,
    ) -> Result<(), CudaError> {
        frame::check_tensor_covers(layout, hp, wp)?;
        let (w, h) = (layout.width, layout.height);
        let shapes = plane_shapes(layout)?;
        if self.planes.len() < shapes.len()
            || shapes
                .iter()
                .zip(&self.planes)
                .any(|(&(r, n), d)| d.len() < r * n)
        {
            return Err(CudaError::Driver("convert back before upload".into()));
        }
        let (wi, hi, wpi, hpi) = (int(w)?, int(h)?, int(wp)?, int(hp)?);
        let ptrs = self.plane_ptrs(shapes.len());
        match layout.format {
            PixelFormat::I420 | PixelFormat::Nv12 => {
                let k = self.encode_coefficients(layout.colorimetry)?;
                let interleaved = i32::from(layout.format == PixelFormat::Nv12);
                let (ypitch, cpitch) = (int(shapes[0].0)?, int(shapes[1].0)?);
                let vp = if interleaved == 1 { ptrs[1] } else { ptrs[2] };
                let cfg = grid(w.div_ceil(2) * h.div_ceil(2))?;
                let mut l = self.stream.launch_builder(&self.kernels.tensor_to_yuv);
                l.arg(&src)
                    .arg(&wpi)
                    .arg(&hpi)
                    .arg(&ptrs[0])
                    .arg(&ypitch)
                    .arg(&ptrs[1]);
                l.arg(&vp)
                    .arg(&cpitch)
                    .arg(&interleaved)
                    .arg(&k)
                    .arg(&wi)
                    .arg(&hi);
                // SAFETY: the arguments match the kernel's signature; the caller vouches for
                // `src`, and the planes were allocated for this layout.
                unsafe { l.launch(cfg) }.map_err(driver)?;
            }
            format => {
                let (bpp, [ro, go, bo]) = packed(format);
                let pitch = int(shapes[0].0)?;
                let cfg = grid(w * h)?;
                let mut l = self.stream.launch_builder(&self.kernels.tensor_to_packed);
                l.arg(&src)
                    .arg(&wpi)
                    .arg(&hpi)
                    .arg(&ptrs[0])
                    .arg(&pitch)
                    .arg(&bpp);
                l.arg(&ro).arg(&go).arg(&bo).arg(&wi).arg(&hi);
                // SAFETY: as above.
                unsafe { l.launch(cfg) }.map_err(driver)?;
            }
        }
        Ok(())
    }

    /// [`crate::runtime::mean_abs_diff`] of two `[3,hp,wp]` tensors on this GPU over the
    /// top-left `h`×`w` region, every `step`-th row and column: the per-frame rain level.
    ///
    /// # Safety
    /// `a` and `b` must be device memory of this context holding `3*hp*wp` floats each,
    /// finished by whatever wrote them.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn mean_abs_diff(
        &mut self,
        a: CUdeviceptr,
        b: CUdeviceptr,
        hp: usize,
        wp: usize,
        h: usize,
        w: usize,
        step: usize,
    ) -> Result<f64, CudaError> {
        let step = step.max(1);
        if h == 0 || w == 0 || h > hp || w > wp {
            return Ok(0.0);
        }
        self.stream.memset_zeros(&mut self.level).map_err(driver)?;
        let rows = h.div_ceil(step);
        let (hpi, wpi, hi, wi, si) = (int(hp)?, int(wp)?, int(h)?, int(w)?, int(step)?);
        {
            let mut l = self.stream.launch_builder(&self.kernels.abs_diff_rows);
            l.arg(&a)
                .arg(&b)
                .arg(&hpi)
                .arg(&wpi)
                .arg(&hi)
                .arg(&wi)
                .arg(&si);
            l.arg(&mut self.level);
            // SAFETY: the arguments match the kernel's signature; the caller vouches for a, b.
            unsafe { l.launch(grid(3 * rows)?) }.map_err(driver)?;
        }
        let sum = self.stream.clone_dtoh(&self.level).map_err(driver)?;
        let count = 3 * rows * w.div_ceil(step);
        Ok(sum.first().copied().unwrap_or(0.0) / count as f64)
    }

    /// Frame → tensor on the GPU, the tensor copied back to the host: the GPU counterpart of
    /// [`frame::frame_to_tensor`] for tests and checks. Returns the tensor and (hp, wp).
    pub fn frame_to_tensor(
        &mut self,
        layout: &FrameLayout,
        planes: &[&[u8]],
        multiple_of: u32,
    ) -> Result<(Vec<f32>, usize, usize), CudaError> {
        let n = layout.tensor_len(multiple_of)?;
        let mut t = self.alloc_tensor(n)?;
        self.upload(layout, planes)?;
        let ptr = self.tensor_ptr(&mut t);
        // SAFETY: `t` is this context's memory of the right size, used by nothing else.
        let (hp, wp) = unsafe { self.to_tensor(layout, multiple_of, ptr)? };
        let host = self.stream.clone_dtoh(&t).map_err(driver)?;
        Ok((host, hp, wp))
    }

    /// Tensor → frame on the GPU, from a host tensor: the counterpart of
    /// [`frame::tensor_to_frame`] for tests and checks. The frame's current bytes go up first,
    /// so alpha and padding bytes are kept.
    pub fn tensor_to_frame(
        &mut self,
        tensor: &[f32],
        hp: usize,
        wp: usize,
        layout: &FrameLayout,
        planes: &mut [&mut [u8]],
    ) -> Result<(), CudaError> {
        if tensor.len() != 3 * hp * wp {
            return Err(FrameError::TensorLength {
                hp,
                wp,
                expected: 3 * hp * wp,
                got: tensor.len(),
            }
            .into());
        }
        let mut t = self.stream.clone_htod(tensor).map_err(driver)?;
        {
            let readable: Vec<&[u8]> = planes.iter().map(|p| &**p).collect();
            self.upload(layout, &readable)?;
        }
        let ptr = self.tensor_ptr(&mut t);
        // SAFETY: `t` holds 3*hp*wp floats copied in on this stream.
        unsafe { self.from_tensor(ptr, hp, wp, layout)? };
        self.download(layout, planes)
    }
}

/// Bytes per pixel and R, G, B offsets of a packed format, as kernel arguments.
fn packed(format: PixelFormat) -> (i32, [i32; 3]) {
    let bpp = format.bytes_per_pixel().unwrap_or(4) as i32;
    let o = format.rgb_offsets().unwrap_or([0, 1, 2]).map(|v| v as i32);
    (bpp, o)
}

fn zeroed_copy() -> sys::CUDA_MEMCPY2D {
    // SAFETY: CUDA_MEMCPY2D is a plain C struct for which all-zero is the documented "unused"
    // value of every field (offsets 0, null pointers).
    unsafe { std::mem::zeroed() }
}

fn check(code: sys::CUresult) -> Result<(), CudaError> {
    if code == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Driver(format!("{code:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC needs no GPU: where its library is on the library path (`source .deps/gpu.env`, or
    /// the torch wheel's nvidia/cu13/lib), the kernels must compile and export every entry point.
    #[test]
    fn kernels_compile_with_nvrtc() {
        match ptx() {
            Ok(ptx) => {
                for name in [
                    "packed_to_tensor",
                    "yuv_to_tensor",
                    "tensor_to_packed",
                    "tensor_to_yuv",
                    "abs_diff_rows",
                ] {
                    assert!(ptx.contains(&format!(".entry {name}")), "{name} missing");
                }
            }
            Err(CudaError::NoNvrtc) => {
                eprintln!("skipping: NVRTC is not on the library path; kernels not compiled here")
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// Without a driver (or GPU) setting up is an error saying so, never a panic.
    #[test]
    fn no_gpu_is_an_error() {
        match CudaFrames::new(0) {
            Ok(f) => eprintln!("a GPU is present: device {}", f.device()),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("CUDA") || msg.contains("NVRTC"), "{msg}");
                eprintln!("as expected without a GPU: {msg}");
            }
        }
    }
}
