//! A frame through a GPU session without touching the host in between: the planes go up once,
//! [`CudaFrames`] writes the model's input straight into a device tensor ONNX Runtime owns and
//! has bound (IoBinding), the network writes its output into another bound device tensor, and
//! the conversion back reads it there before the planes come down once.

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

use super::{CudaError, CudaFrames};
use crate::card::{INPUT_NAME, OUTPUT_NAME};
use crate::frame::{FrameLayout, padded_size};

/// Device tensors bound to one session's input and output for one padded size.
struct Bound {
    binding: IoBinding,
    input: Tensor<f32>,
    output: Tensor<f32>,
    hp: usize,
    wp: usize,
}

/// The GPU frame path of one session on CUDA device `device`.
pub struct BoundFrames {
    frames: CudaFrames,
    allocator: Allocator,
    bound: Option<Bound>,
}

impl std::fmt::Debug for BoundFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundFrames")
            .field("device", &self.frames.device())
            .field("size", &self.bound.as_ref().map(|b| (b.hp, b.wp)))
            .finish()
    }
}

fn ort_err(e: ort::Error) -> CudaError {
    CudaError::Driver(format!("ONNX Runtime: {e}"))
}

/// The device address of a tensor ONNX Runtime allocated on the GPU.
fn device_ptr(t: &Tensor<f32>) -> cudarc::driver::sys::CUdeviceptr {
    t.data_ptr() as usize as cudarc::driver::sys::CUdeviceptr
}

impl BoundFrames {
    /// Sets up the GPU frame path for `session` (created on the CUDA or TensorRT provider for
    /// device `device`).
    pub fn new(session: &Session, device: i32) -> Result<Self, CudaError> {
        let ordinal = usize::try_from(device).map_err(|_| CudaError::NoDevice {
            device: 0,
            count: 0,
        })?;
        let frames = CudaFrames::new(ordinal)?;
        let info = MemoryInfo::new(
            AllocationDevice::CUDA,
            device,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(ort_err)?;
        let allocator = Allocator::new(session, info).map_err(ort_err)?;
        Ok(Self {
            frames,
            allocator,
            bound: None,
        })
    }

    fn bind(&mut self, session: &Session, hp: usize, wp: usize) -> Result<&mut Bound, CudaError> {
        let stale = self.bound.as_ref().is_none_or(|b| (b.hp, b.wp) != (hp, wp));
        if stale {
            // The old tensors go first so their device memory is free for the new ones.
            self.bound = None;
            let shape = [1_usize, 3, hp, wp];
            let input = Tensor::<f32>::new(&self.allocator, shape).map_err(ort_err)?;
            let mut output = Tensor::<f32>::new(&self.allocator, shape).map_err(ort_err)?;
            let mut binding = session.create_binding().map_err(ort_err)?;
            binding.bind_input(INPUT_NAME, &input).map_err(ort_err)?;
            binding
                .bind_output(OUTPUT_NAME, &mut output)
                .map_err(ort_err)?;
            self.bound = Some(Bound {
                binding,
                input,
                output,
                hp,
                wp,
            });
        }
        self.bound
            .as_mut()
            .ok_or_else(|| CudaError::Driver("no bound tensors".into()))
    }

    /// Converts, runs and converts back one frame on the GPU. `input` and `output` differ only
    /// in strides. Returns the rain level (mean |input − output| sampled every `level_step`-th
    /// row and column) when `level_step` is given, else 0.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        session: &mut Session,
        multiple_of: u32,
        input: &FrameLayout,
        in_planes: &[&[u8]],
        output: &FrameLayout,
        out_planes: &mut [&mut [u8]],
        level_step: Option<usize>,
    ) -> Result<f64, CudaError> {
        let (hp, wp) = padded_size(input.height, input.width, multiple_of);
        input.tensor_len(multiple_of)?;
        self.frames.upload(input, in_planes)?;
        let (in_ptr, out_ptr) = {
            let b = self.bind(session, hp, wp)?;
            (device_ptr(&b.input), device_ptr(&b.output))
        };
        // SAFETY: the input tensor is ONNX Runtime's device memory of this GPU, 3*hp*wp floats,
        // idle until the run below (which the synchronisation orders after the conversion).
        unsafe { self.frames.to_tensor(input, multiple_of, in_ptr)? };
        self.frames.synchronize()?;
        {
            let b = self
                .bound
                .as_ref()
                .ok_or_else(|| CudaError::Driver("no bound tensors".into()))?;
            // ONNX Runtime synchronises its stream at the end of a run (the default), so the
            // output is complete when this returns.
            let outputs = session.run_binding(&b.binding).map_err(ort_err)?;
            drop(outputs);
        }
        let level = match level_step {
            // SAFETY: both tensors are this GPU's, 3*hp*wp floats, finished (see above).
            Some(step) => unsafe {
                self.frames.mean_abs_diff(
                    in_ptr,
                    out_ptr,
                    hp,
                    wp,
                    input.height,
                    input.width,
                    step,
                )?
            },
            None => 0.0,
        };
        // SAFETY: the output tensor holds the finished result, 3*hp*wp floats.
        unsafe { self.frames.from_tensor(out_ptr, hp, wp, output)? };
        self.frames.download(output, out_planes)?;
        Ok(level)
    }
}
