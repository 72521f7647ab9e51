//! One frame in, one frame out: the sandwich every consumer of a generator runs.
//!
//! A raw frame (any [`PixelFormat`], its planes with their real strides) becomes the padded
//! `[1,3,Hp,Wp]` tensor ([`frame::frame_to_tensor`]), the network runs on it, and the output
//! tensor is written back into the output frame's planes ([`frame::tensor_to_frame`]: clamp,
//! round, crop the padding). The alpha of formats that have one is carried from the input frame to
//! the output frame (the network does not touch it). With a network that can convert frames
//! itself (the `cuda` feature's GPU frame path, see [`Network::use_frame_path`]) the frame goes
//! that way instead.
//!
//! [`Derainer`] holds the network, the frame layout it is configured for and the scratch tensor,
//! so that the `derain` element, the still-image tools and the trainer's validation all run the
//! same code. The network is pluggable ([`Network`]): an ONNX Runtime [`Generator`] (the default),
//! a borrowed one (`&mut Generator`), or any other network that maps a padded tensor to a tensor
//! of the same shape (the trainer's own).
//!
//! The frame's path is described in docs/ARCHITECTURE.md ("The frame's path").

use std::time::{Duration, Instant};

use crate::frame::{self, FrameError, FrameLayout, PixelFormat};
use crate::runtime::{Generator, RuntimeError};

/// The largest frame taken, in pixels after padding: 8192x8192. The float tensor alone costs 12
/// bytes a pixel (800 MB here); sizes beyond this come from corrupt streams, not cameras, and
/// allocating for them would abort the process.
pub const MAX_PIXELS: usize = 8192 * 8192;

/// A network a [`Derainer`] can run: the model contract's `[1,3,H,W]` float tensor in [0,1] in,
/// a tensor of the same shape out, with H and W multiples of [`Network::multiple_of`].
pub trait Network {
    /// What a failed run reports.
    type Error: std::error::Error + 'static;

    /// H and W of the tensors given to [`Network::run_padded`] are multiples of this (1: any).
    fn multiple_of(&self) -> u32;

    /// Runs the network on one `[1,3,h,w]` tensor (`input.len() == 3*h*w`) and hands the output
    /// tensor, of the same shape, to `consume`.
    fn run_padded<R>(
        &mut self,
        input: &[f32],
        h: usize,
        w: usize,
        consume: impl FnOnce(&[f32]) -> R,
    ) -> Result<R, Self::Error>;

    /// Sets up a path on which the network takes whole frames itself ([`Network::run_frame`]):
    /// `Ok(true)` when it will, `Ok(false)` when frames are to be converted on the CPU, and an
    /// error saying what is missing when such a path should exist but cannot be set up (frames
    /// are converted on the CPU then). None by default.
    fn use_frame_path(&mut self) -> Result<bool, String> {
        Ok(false)
    }

    /// Converts, runs and converts back one frame on the path [`Network::use_frame_path`] set up;
    /// `None` when there is no such path (the frame is converted on the CPU then).
    fn run_frame(
        &mut self,
        _input: &FrameLayout,
        _in_planes: &[&[u8]],
        _output: &FrameLayout,
        _out_planes: &mut [&mut [u8]],
    ) -> Option<Result<(), Self::Error>> {
        None
    }
}

impl Network for Generator {
    type Error = RuntimeError;

    fn multiple_of(&self) -> u32 {
        Generator::multiple_of(self)
    }

    fn run_padded<R>(
        &mut self,
        input: &[f32],
        h: usize,
        w: usize,
        consume: impl FnOnce(&[f32]) -> R,
    ) -> Result<R, RuntimeError> {
        self.run(input, h, w, consume)
    }

    /// The GPU frame path ([`Generator::use_gpu_frames`]).
    fn use_frame_path(&mut self) -> Result<bool, String> {
        self.use_gpu_frames()
    }

    fn run_frame(
        &mut self,
        input: &FrameLayout,
        in_planes: &[&[u8]],
        output: &FrameLayout,
        out_planes: &mut [&mut [u8]],
    ) -> Option<Result<(), RuntimeError>> {
        // No rain level from the network: callers score the input frame themselves.
        Some(
            self.run_frame_gpu(input, in_planes, output, out_planes, None)
                .map(|_| ()),
        )
    }
}

/// A borrowed network runs as the network itself.
impl<N: Network + ?Sized> Network for &mut N {
    type Error = N::Error;

    fn multiple_of(&self) -> u32 {
        (**self).multiple_of()
    }

    fn run_padded<R>(
        &mut self,
        input: &[f32],
        h: usize,
        w: usize,
        consume: impl FnOnce(&[f32]) -> R,
    ) -> Result<R, N::Error> {
        (**self).run_padded(input, h, w, consume)
    }

    fn use_frame_path(&mut self) -> Result<bool, String> {
        (**self).use_frame_path()
    }

    fn run_frame(
        &mut self,
        input: &FrameLayout,
        in_planes: &[&[u8]],
        output: &FrameLayout,
        out_planes: &mut [&mut [u8]],
    ) -> Option<Result<(), N::Error>> {
        (**self).run_frame(input, in_planes, output, out_planes)
    }
}

/// What went wrong deraining a frame. [`DerainError::is_format`] tells a frame that cannot be
/// taken (its size, its planes) from a network that failed.
#[derive(Debug, thiserror::Error)]
pub enum DerainError<E: std::error::Error + 'static = RuntimeError> {
    /// The frame's planes do not fit the layout, or its size cannot be addressed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The padded frame has more pixels than the derainer takes ([`MAX_PIXELS`] unless
    /// [`Derainer::with_max_pixels`] said otherwise).
    #[error(
        "{width}x{height} frames are larger than this derainer takes (at most {max_pixels} pixels \
         after padding)"
    )]
    TooLarge {
        width: usize,
        height: usize,
        max_pixels: usize,
    },
    /// The scratch tensor for the frame size could not be allocated.
    #[error("cannot allocate the {width}x{height} frame's tensor ({megabytes} MB)")]
    OutOfMemory {
        width: usize,
        height: usize,
        megabytes: usize,
    },
    /// A frame came before [`Derainer::configure`] set the layout.
    #[error("no frame layout configured")]
    NotConfigured,
    /// The network failed.
    #[error(transparent)]
    Run(E),
}

impl<E: std::error::Error + 'static> DerainError<E> {
    /// Whether the frame itself cannot be taken (its size or planes), rather than the network or
    /// the memory failing.
    pub fn is_format(&self) -> bool {
        matches!(
            self,
            DerainError::Frame(_) | DerainError::TooLarge { .. } | DerainError::NotConfigured
        )
    }
}

/// Frame in → frame out with one network, for one frame layout at a time (see the module
/// documentation).
#[derive(Debug)]
pub struct Derainer<N: Network = Generator> {
    network: N,
    /// The frame format, size and colorimetry (strides come with each frame).
    layout: Option<FrameLayout>,
    /// The scratch tensor, `3 * padded.0 * padded.1` floats.
    tensor: Vec<f32>,
    /// The network input size (hp, wp) the scratch tensor is sized for.
    padded: (usize, usize),
    /// Frames go through [`Network::run_frame`] (set by [`Derainer::use_frame_path`]).
    frame_path: bool,
    /// The largest padded frame taken, in pixels.
    max_pixels: usize,
}

impl<N: Network> Derainer<N> {
    /// A derainer for `network`, not yet configured for a frame layout; frames are converted on
    /// the CPU until [`Derainer::use_frame_path`] says otherwise.
    pub fn new(network: N) -> Self {
        Self {
            network,
            layout: None,
            tensor: Vec::new(),
            padded: (0, 0),
            frame_path: false,
            max_pixels: MAX_PIXELS,
        }
    }

    /// The same derainer taking padded frames of up to `max_pixels` pixels instead of
    /// [`MAX_PIXELS`] (still images on a workstation may be larger than any camera's frames).
    pub fn with_max_pixels(self, max_pixels: usize) -> Self {
        Self { max_pixels, ..self }
    }

    /// Sets up the network's own frame path (the GPU frame path of a [`Generator`] in a `cuda`
    /// build on a GPU provider), see [`Network::use_frame_path`]: `Ok(true)` when frames take it
    /// from now on; an error says why a path that should exist cannot be used (frames are
    /// converted on the CPU then).
    pub fn use_frame_path(&mut self) -> Result<bool, String> {
        let result = self.network.use_frame_path();
        self.frame_path = matches!(result, Ok(true));
        result
    }

    /// Whether frames take the network's own frame path (e.g. cross to the GPU once and are
    /// converted there).
    pub fn frame_path(&self) -> bool {
        self.frame_path
    }

    /// The network.
    pub fn network(&self) -> &N {
        &self.network
    }

    /// The network, mutably.
    pub fn network_mut(&mut self) -> &mut N {
        &mut self.network
    }

    /// The network, giving up the derainer.
    pub fn into_network(self) -> N {
        self.network
    }

    /// The frame layout configured (its strides those given to [`Derainer::configure`]).
    pub fn layout(&self) -> Option<&FrameLayout> {
        self.layout.as_ref()
    }

    /// The network input size (hp, wp) of the configured frames: width and height rounded up to
    /// the network's multiple; (0, 0) before any.
    pub fn padded(&self) -> (usize, usize) {
        self.padded
    }

    /// Configures the derainer for frames of `layout`'s format, size and colorimetry (the strides
    /// come with each frame, see [`Derainer::process`]), sizing the scratch tensor. Returns
    /// whether the network input size changed (then a [`Derainer::warm_up`] is due). A frame too
    /// large ([`MAX_PIXELS`]) or one whose tensor cannot be allocated is an error, and leaves the
    /// derainer as it was.
    pub fn configure(&mut self, layout: FrameLayout) -> Result<bool, DerainError<N::Error>> {
        let resized = self.reserve(layout.width, layout.height)?;
        self.layout = Some(layout);
        Ok(resized)
    }

    /// Sizes the scratch tensor for `width`×`height` frames; returns whether the padded size
    /// changed.
    fn reserve(&mut self, width: usize, height: usize) -> Result<bool, DerainError<N::Error>> {
        let padded = frame::padded_size(height, width, self.network.multiple_of());
        let floats = padded
            .0
            .checked_mul(padded.1)
            .filter(|&p| p <= self.max_pixels)
            .and_then(|p| p.checked_mul(3))
            .ok_or(DerainError::TooLarge {
                width,
                height,
                max_pixels: self.max_pixels,
            })?;
        // Kept when it has the size already: every frame overwrites all of it.
        if self.tensor.len() != floats {
            let mut tensor = Vec::new();
            tensor
                .try_reserve_exact(floats)
                .map_err(|_| DerainError::OutOfMemory {
                    width,
                    height,
                    megabytes: (floats * 4) >> 20,
                })?;
            tensor.resize(floats, 0.0);
            self.tensor = tensor;
        }
        let resized = self.padded != padded;
        self.padded = padded;
        Ok(resized)
    }

    /// Runs the network once on a blank frame of the configured size: the first run at a size is
    /// slow (allocations, kernel choice, TensorRT engines), so a caller runs this before the first
    /// real frame, and the time it returns is an honest first estimate of a frame's cost.
    pub fn warm_up(&mut self) -> Result<Duration, DerainError<N::Error>> {
        if self.layout.is_none() {
            return Err(DerainError::NotConfigured);
        }
        self.run_blank()
    }

    /// [`Derainer::warm_up`] for `width`×`height` frames before a layout is known (a network
    /// opened to replace a running one is run once at the stream's size). Returns how long the
    /// run took; [`Derainer::padded`] says at which network input size. The scratch tensor stays
    /// sized for it.
    pub fn warm_up_at(
        &mut self,
        width: usize,
        height: usize,
    ) -> Result<Duration, DerainError<N::Error>> {
        self.reserve(width, height)?;
        self.run_blank()
    }

    /// One run on a blank tensor of the current padded size; how long it took.
    fn run_blank(&mut self) -> Result<Duration, DerainError<N::Error>> {
        let (hp, wp) = self.padded;
        self.tensor.fill(0.0);
        let started = Instant::now();
        self.network
            .run_padded(&self.tensor, hp, wp, |_| ())
            .map_err(DerainError::Run)?;
        Ok(started.elapsed())
    }

    /// Derains one frame of the configured layout: `in_planes` (rows `in_strides` apart) into
    /// `out_planes` (rows `out_strides` apart), one slice per plane of the format. Strides may
    /// change from frame to frame (mapped buffers of a pool); format and size may not.
    pub fn process(
        &mut self,
        in_strides: [usize; 3],
        in_planes: &[&[u8]],
        out_strides: [usize; 3],
        out_planes: &mut [&mut [u8]],
    ) -> Result<(), DerainError<N::Error>> {
        let layout = self.layout.ok_or(DerainError::NotConfigured)?;
        let input = FrameLayout {
            strides: in_strides,
            ..layout
        };
        let output = FrameLayout {
            strides: out_strides,
            ..layout
        };
        if self.frame_path
            && let Some(result) = self
                .network
                .run_frame(&input, in_planes, &output, out_planes)
        {
            return result.map_err(DerainError::Run);
        }
        let (hp, wp) = frame::frame_to_tensor(
            &input,
            in_planes,
            self.network.multiple_of(),
            &mut self.tensor,
        )?;
        if has_alpha(layout.format) {
            carry_alpha(&input, in_planes, &output, out_planes)?;
        }
        self.network
            .run_padded(&self.tensor, hp, wp, |clean| {
                frame::tensor_to_frame(clean, hp, wp, &output, out_planes)
            })
            .map_err(DerainError::Run)??;
        Ok(())
    }
}

/// Formats whose fourth byte is alpha (kept), rather than padding (left untouched).
fn has_alpha(format: PixelFormat) -> bool {
    matches!(
        format,
        PixelFormat::Rgba | PixelFormat::Bgra | PixelFormat::Argb | PixelFormat::Abgr
    )
}

/// Copies the pixel rows of a packed frame from `input` to `output` (the network's colour bytes
/// are written over them afterwards, so only the alpha stays): bytes past each row are left.
fn carry_alpha(
    input: &FrameLayout,
    in_planes: &[&[u8]],
    output: &FrameLayout,
    out_planes: &mut [&mut [u8]],
) -> Result<(), FrameError> {
    input.check_planes(in_planes)?;
    output.check_planes(out_planes)?;
    let (Some((row, rows)), [src], [dst]) = (input.plane_geometry(0), in_planes, out_planes) else {
        // Unreachable for the packed formats `check_planes` accepted with one plane.
        return Err(FrameError::PlaneCount {
            format: input.format,
            expected: input.format.n_planes(),
            got: in_planes.len(),
        });
    };
    let (si, so) = (input.strides[0], output.strides[0]);
    for y in 0..rows {
        dst[y * so..][..row].copy_from_slice(&src[y * si..][..row]);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
