//! Raw video frames ⇄ the float tensor an image-to-image network eats (docs/ARCHITECTURE.md, The
//! model contract and The frame's path).
//!
//! [`frame_to_tensor`] turns a frame in any [`PixelFormat`], with real per-plane strides, into a
//! `[1,3,Hp,Wp]` float32 tensor: R, G and B planes, values in [0,1], reflect-padded at the bottom
//! and right so that Hp and Wp are multiples of the model's `multiple_of` ([`padded_size`]).
//! [`tensor_to_frame`] goes back from a tensor of that padded shape to a frame of the same format,
//! cropping the padding away (the top-left `width`×`height` region is the image).
//!
//! Written once for the GStreamer element, the CLI and the tests, so every size works (1×1, 1×N,
//! odd widths and heights), bad sizes or short slices are errors and never panics, and the inner
//! loops run per row over slices with the format dispatched once per frame.
//!
//! Conventions:
//! - u8 → f32 is `v / 255`; f32 → u8 clamps to [0,1] and rounds half up (`(v * 255 + 0.5) as u8`),
//!   so an RGB-family frame survives frame → tensor → frame exactly.
//! - Alpha and padding bytes (`RGBA`, `xRGB`, …) are ignored on the way in and left untouched on
//!   the way out, as are the bytes between the end of a row and the stride.
//! - YUV (I420, NV12) uses the layout's [`YuvColorimetry`]. Chroma is upsampled nearest on the way
//!   in (each 2×2 block uses its chroma sample); on the way out Y is computed per pixel and chroma
//!   is the mean over the 2×2 block (cropped to the image) of the per-pixel chroma.
//! - Reflect padding mirrors without repeating the edge (numpy `reflect`, ONNX `Pad` reflect),
//!   repeatedly when the padding is wider than the image.

use std::fmt;
use std::str::FromStr;

/// Raw video formats, named after their GStreamer counterparts ([`PixelFormat::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed R, G, B; 3 bytes per pixel.
    Rgb,
    /// Packed B, G, R; 3 bytes per pixel.
    Bgr,
    /// Packed R, G, B, A.
    Rgba,
    /// Packed B, G, R, A.
    Bgra,
    /// Packed A, R, G, B.
    Argb,
    /// Packed A, B, G, R.
    Abgr,
    /// Packed R, G, B, padding byte.
    Rgbx,
    /// Packed B, G, R, padding byte.
    Bgrx,
    /// Packed padding byte, R, G, B.
    Xrgb,
    /// Packed padding byte, B, G, R.
    Xbgr,
    /// Planar 4:2:0: a Y plane, then U and V planes of ⌈w/2⌉×⌈h/2⌉.
    I420,
    /// Semi-planar 4:2:0: a Y plane, then one plane of interleaved U,V pairs (⌈w/2⌉ pairs per row,
    /// ⌈h/2⌉ rows).
    Nv12,
}

impl PixelFormat {
    /// Every format, in declaration order.
    pub const ALL: [PixelFormat; 12] = [
        PixelFormat::Rgb,
        PixelFormat::Bgr,
        PixelFormat::Rgba,
        PixelFormat::Bgra,
        PixelFormat::Argb,
        PixelFormat::Abgr,
        PixelFormat::Rgbx,
        PixelFormat::Bgrx,
        PixelFormat::Xrgb,
        PixelFormat::Xbgr,
        PixelFormat::I420,
        PixelFormat::Nv12,
    ];

    /// Number of planes: 1 for the packed RGB family, 3 for I420, 2 for NV12.
    pub fn n_planes(self) -> usize {
        match self {
            PixelFormat::I420 => 3,
            PixelFormat::Nv12 => 2,
            _ => 1,
        }
    }

    /// Whether this is a YUV format (I420, NV12).
    pub fn is_yuv(self) -> bool {
        matches!(self, PixelFormat::I420 | PixelFormat::Nv12)
    }

    /// Bytes per pixel of a packed RGB-family format (3 or 4); `None` for YUV.
    pub fn bytes_per_pixel(self) -> Option<usize> {
        match self {
            PixelFormat::Rgb | PixelFormat::Bgr => Some(3),
            PixelFormat::I420 | PixelFormat::Nv12 => None,
            _ => Some(4),
        }
    }

    /// Byte offsets of R, G and B within a pixel of a packed RGB-family format; `None` for YUV.
    pub fn rgb_offsets(self) -> Option<[usize; 3]> {
        match self {
            PixelFormat::Rgb | PixelFormat::Rgba | PixelFormat::Rgbx => Some([0, 1, 2]),
            PixelFormat::Bgr | PixelFormat::Bgra | PixelFormat::Bgrx => Some([2, 1, 0]),
            PixelFormat::Argb | PixelFormat::Xrgb => Some([1, 2, 3]),
            PixelFormat::Abgr | PixelFormat::Xbgr => Some([3, 2, 1]),
            PixelFormat::I420 | PixelFormat::Nv12 => None,
        }
    }

    /// The GStreamer name (`GstVideoFormat` string), e.g. `RGBx`, `NV12`.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb => "RGB",
            PixelFormat::Bgr => "BGR",
            PixelFormat::Rgba => "RGBA",
            PixelFormat::Bgra => "BGRA",
            PixelFormat::Argb => "ARGB",
            PixelFormat::Abgr => "ABGR",
            PixelFormat::Rgbx => "RGBx",
            PixelFormat::Bgrx => "BGRx",
            PixelFormat::Xrgb => "xRGB",
            PixelFormat::Xbgr => "xBGR",
            PixelFormat::I420 => "I420",
            PixelFormat::Nv12 => "NV12",
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PixelFormat {
    type Err = FrameError;

    /// Parses a GStreamer format name, ignoring case (`rgbx`, `BGRx`, `nv12` …).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PixelFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| FrameError::UnknownFormat(s.to_owned()))
    }
}

/// YUV ⇄ RGB matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum YuvMatrix {
    /// ITU-R BT.601 (Kr 0.299, Kb 0.114): SD video.
    #[default]
    Bt601,
    /// ITU-R BT.709 (Kr 0.2126, Kb 0.0722): HD video.
    Bt709,
    /// ITU-R BT.2020 (Kr 0.2627, Kb 0.0593): UHD video.
    Bt2020,
}

impl YuvMatrix {
    /// The luma coefficients (Kr, Kb); Kg = 1 − Kr − Kb.
    pub fn kr_kb(self) -> (f64, f64) {
        match self {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
            YuvMatrix::Bt2020 => (0.2627, 0.0593),
        }
    }
}

/// How YUV bytes map to RGB: the matrix and the range. The default is BT.601, limited range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct YuvColorimetry {
    /// The YUV ⇄ RGB matrix.
    pub matrix: YuvMatrix,
    /// Full range (Y 0–255, chroma 0–255 centred at 128) rather than limited range (Y 16–235,
    /// chroma 16–240).
    pub full_range: bool,
}

/// Geometry of one frame: format, size and per-plane strides (bytes per row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameLayout {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes from the start of one row to the start of the next, per plane; entries past
    /// [`PixelFormat::n_planes`] are ignored. A plane of a single row may have any stride.
    pub strides: [usize; 3],
    /// YUV colorimetry; ignored for the RGB family.
    pub colorimetry: YuvColorimetry,
}

impl FrameLayout {
    /// Tightly packed default strides (no row padding) and default colorimetry - handy for tests
    /// and the CLI.
    pub fn packed(format: PixelFormat, width: usize, height: usize) -> FrameLayout {
        let mut layout = FrameLayout {
            format,
            width,
            height,
            strides: [0; 3],
            colorimetry: YuvColorimetry::default(),
        };
        for plane in 0..format.n_planes() {
            // A size too large to address keeps stride 0; `check_planes` reports it.
            layout.strides[plane] = layout.plane_geometry(plane).map_or(0, |(row, _)| row);
        }
        layout
    }

    /// The same layout with another colorimetry.
    pub fn with_colorimetry(self, colorimetry: YuvColorimetry) -> FrameLayout {
        FrameLayout {
            colorimetry,
            ..self
        }
    }

    /// Bytes per row and number of rows of plane `plane`; `None` if the format has no such plane
    /// or the row size overflows `usize`.
    pub fn plane_geometry(&self, plane: usize) -> Option<(usize, usize)> {
        let (w, h) = (self.width, self.height);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        match (self.format, plane) {
            (PixelFormat::I420 | PixelFormat::Nv12, 0) => Some((w, h)),
            (PixelFormat::I420, 1 | 2) => Some((cw, ch)),
            (PixelFormat::Nv12, 1) => Some((cw.checked_mul(2)?, ch)),
            (format, 0) => Some((w.checked_mul(format.bytes_per_pixel()?)?, h)),
            _ => None,
        }
    }

    /// Minimum byte length each plane slice must have (stride×(rows−1) + row bytes): 0 for a
    /// plane the format does not have, `usize::MAX` (unsatisfiable) when the size overflows.
    pub fn plane_len(&self, plane: usize) -> usize {
        if plane >= self.format.n_planes() {
            return 0;
        }
        self.plane_geometry(plane)
            .and_then(|(row, rows)| min_plane_len(self.strides.get(plane).copied()?, row, rows))
            .unwrap_or(usize::MAX)
    }

    /// Checks that the size is non-zero and that `planes` has the right number of slices, each
    /// with a large enough stride and length for this layout.
    pub fn check_planes<P: AsRef<[u8]>>(&self, planes: &[P]) -> Result<(), FrameError> {
        let (format, width, height) = (self.format, self.width, self.height);
        if width == 0 || height == 0 {
            return Err(FrameError::ZeroSize { width, height });
        }
        let expected = format.n_planes();
        if planes.len() != expected {
            return Err(FrameError::PlaneCount {
                format,
                expected,
                got: planes.len(),
            });
        }
        for (plane, (data, &stride)) in planes.iter().zip(&self.strides).enumerate() {
            let (row_bytes, rows) = self.plane_geometry(plane).ok_or(self.too_large())?;
            if rows > 1 && stride < row_bytes {
                return Err(FrameError::StrideTooSmall {
                    format,
                    width,
                    height,
                    plane,
                    stride,
                    row_bytes,
                });
            }
            let needed = min_plane_len(stride, row_bytes, rows).ok_or(self.too_large())?;
            let got = data.as_ref().len();
            if got < needed {
                return Err(FrameError::PlaneTooShort {
                    format,
                    width,
                    height,
                    plane,
                    stride,
                    expected: needed,
                    got,
                });
            }
        }
        Ok(())
    }

    /// Length `3*hp*wp` of the tensor for this frame padded to `multiple_of` (see
    /// [`padded_size`]).
    pub fn tensor_len(&self, multiple_of: u32) -> Result<usize, FrameError> {
        let (hp, wp) = self.checked_padded_size(multiple_of)?;
        tensor_len(hp, wp)
    }

    fn checked_padded_size(&self, multiple_of: u32) -> Result<(usize, usize), FrameError> {
        match (
            round_up(self.height, multiple_of),
            round_up(self.width, multiple_of),
        ) {
            (Some(hp), Some(wp)) => Ok((hp, wp)),
            _ => Err(self.too_large()),
        }
    }

    fn too_large(&self) -> FrameError {
        FrameError::TooLarge {
            format: self.format,
            width: self.width,
            height: self.height,
        }
    }
}

/// What went wrong converting a frame; each message says what was expected and what was got.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Width or height is zero.
    #[error("frame size must be non-zero, got {width}x{height}")]
    ZeroSize { width: usize, height: usize },
    /// `planes` has the wrong number of slices for the format.
    #[error("{format} frames have {expected} plane(s), got {got}")]
    PlaneCount {
        format: PixelFormat,
        expected: usize,
        got: usize,
    },
    /// A stride is smaller than the plane's row.
    #[error(
        "plane {plane} of a {width}x{height} {format} frame: stride {stride} is smaller than a row \
         of {row_bytes} bytes"
    )]
    StrideTooSmall {
        format: PixelFormat,
        width: usize,
        height: usize,
        plane: usize,
        stride: usize,
        row_bytes: usize,
    },
    /// A plane slice is shorter than its rows need.
    #[error(
        "plane {plane} of a {width}x{height} {format} frame (stride {stride}) is too short: \
         expected at least {expected} bytes, got {got}"
    )]
    PlaneTooShort {
        format: PixelFormat,
        width: usize,
        height: usize,
        plane: usize,
        stride: usize,
        expected: usize,
        got: usize,
    },
    /// The tensor slice is not `3*hp*wp` long.
    #[error("tensor length: expected 3x{hp}x{wp} = {expected} floats, got {got}")]
    TensorLength {
        hp: usize,
        wp: usize,
        expected: usize,
        got: usize,
    },
    /// The tensor is smaller than the frame it should fill.
    #[error("tensor of {wp}x{hp} (WxH) is smaller than the {width}x{height} frame")]
    TensorTooSmall {
        hp: usize,
        wp: usize,
        width: usize,
        height: usize,
    },
    /// The tensor size `3*hp*wp` overflows `usize`.
    #[error("tensor of 3x{hp}x{wp} floats is too large to address")]
    TensorTooLarge { hp: usize, wp: usize },
    /// The frame's planes or padded tensor would be too large to address.
    #[error("a {width}x{height} {format} frame is too large to address")]
    TooLarge {
        format: PixelFormat,
        width: usize,
        height: usize,
    },
    /// [`PixelFormat::from_str`] got a name it does not know.
    #[error(
        "unknown pixel format '{0}', expected one of RGB, BGR, RGBA, BGRA, ARGB, ABGR, RGBx, BGRx, \
         xRGB, xBGR, I420, NV12"
    )]
    UnknownFormat(String),
}

/// Padded tensor size for an image: (hp, wp), `height` and `width` rounded up to a multiple of
/// `multiple_of` (0 or 1: no padding). A size that would overflow comes back as `usize::MAX`
/// (no slice can be that long, so the conversions then fail with an error).
pub fn padded_size(height: usize, width: usize, multiple_of: u32) -> (usize, usize) {
    (
        round_up(height, multiple_of).unwrap_or(usize::MAX),
        round_up(width, multiple_of).unwrap_or(usize::MAX),
    )
}

/// Frame → tensor. `planes[i]` is plane i's bytes (plane i starts at `planes[i][0]`). `out` must
/// have length `3*hp*wp` (hp, wp from [`padded_size`]) and is fully overwritten, the reflect
/// padding included. Returns (hp, wp).
pub fn frame_to_tensor(
    layout: &FrameLayout,
    planes: &[&[u8]],
    multiple_of: u32,
    out: &mut [f32],
) -> Result<(usize, usize), FrameError> {
    layout.check_planes(planes)?;
    let (w, h) = (layout.width, layout.height);
    let (hp, wp) = layout.checked_padded_size(multiple_of)?;
    let plane_size = check_tensor_len(hp, wp, out.len())?;
    let (r, rest) = out.split_at_mut(plane_size);
    let (g, b) = rest.split_at_mut(plane_size);
    let [s0, s1, s2] = layout.strides;
    let dims = Dims { w, h, wp };
    match (layout.format, planes) {
        (PixelFormat::I420, &[y, u, v]) => {
            let t = YuvDecode::new(layout.colorimetry);
            let cw = w.div_ceil(2);
            for (row, ((r, g), b)) in tensor_rows_mut(dims, r, g, b).enumerate() {
                let c = row / 2;
                let yrow = &y[row * s0..][..w];
                let urow = &u[c * s1..][..cw];
                let vrow = &v[c * s2..][..cw];
                yuv_row_to_tensor(
                    &t,
                    yrow,
                    urow.iter().copied().zip(vrow.iter().copied()),
                    r,
                    g,
                    b,
                );
            }
        }
        (PixelFormat::Nv12, &[y, uv]) => {
            let t = YuvDecode::new(layout.colorimetry);
            let cw = w.div_ceil(2);
            for (row, ((r, g), b)) in tensor_rows_mut(dims, r, g, b).enumerate() {
                let yrow = &y[row * s0..][..w];
                let (uvrow, _) = uv[row / 2 * s1..][..2 * cw].as_chunks::<2>();
                yuv_row_to_tensor(&t, yrow, uvrow.iter().map(|&[u, v]| (u, v)), r, g, b);
            }
        }
        (format, &[src]) => {
            let (read, _) = packed_fns(format).ok_or(layout.too_large())?;
            read(src, s0, dims, r, g, b);
        }
        _ => {
            // Unreachable: `check_planes` checked the plane count.
            return Err(FrameError::PlaneCount {
                format: layout.format,
                expected: layout.format.n_planes(),
                got: planes.len(),
            });
        }
    }
    for plane in out.chunks_exact_mut(plane_size) {
        pad_plane(plane, w, h, wp, hp);
    }
    Ok((hp, wp))
}

/// An `hp`×`wp` tensor must cover the frame it is cropped back into.
pub fn check_tensor_covers(layout: &FrameLayout, hp: usize, wp: usize) -> Result<(), FrameError> {
    if hp < layout.height || wp < layout.width {
        return Err(FrameError::TensorTooSmall {
            hp,
            wp,
            width: layout.width,
            height: layout.height,
        });
    }
    Ok(())
}

/// Tensor → frame. `tensor` is `3*hp*wp` floats (hp, wp as from [`padded_size`]; any size at
/// least the frame's works); the top-left `layout.width`×`layout.height` region is written into
/// `planes`, the padding is dropped. Values are clamped to [0,1] and rounded to nearest. Alpha and
/// padding bytes of the RGB family, and bytes past each row up to the stride, are left untouched.
pub fn tensor_to_frame(
    tensor: &[f32],
    hp: usize,
    wp: usize,
    layout: &FrameLayout,
    planes: &mut [&mut [u8]],
) -> Result<(), FrameError> {
    layout.check_planes(planes)?;
    check_tensor_covers(layout, hp, wp)?;
    let (w, h) = (layout.width, layout.height);
    let plane_size = check_tensor_len(hp, wp, tensor.len())?;
    let (r, rest) = tensor.split_at(plane_size);
    let (g, b) = rest.split_at(plane_size);
    let [s0, s1, s2] = layout.strides;
    let dims = Dims { w, h, wp };
    let format = layout.format;
    let n_planes = planes.len();
    match (format, planes) {
        (PixelFormat::I420, [y, u, v]) => {
            let k = YuvEncode::new(layout.colorimetry);
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let u = rows_mut(u, s1, cw, ch);
            let v = rows_mut(v, s2, cw, ch);
            let chroma = u.zip(v).map(|(u, v)| ChromaRowMut::Planar(u, v));
            yuv_from_tensor(&k, dims, [r, g, b], rows_mut(y, s0, w, h), chroma);
        }
        (PixelFormat::Nv12, [y, uv]) => {
            let k = YuvEncode::new(layout.colorimetry);
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let chroma = rows_mut(uv, s1, 2 * cw, ch).map(ChromaRowMut::Interleaved);
            yuv_from_tensor(&k, dims, [r, g, b], rows_mut(y, s0, w, h), chroma);
        }
        (format, [dst]) => {
            let (_, write) = packed_fns(format).ok_or(layout.too_large())?;
            write(dst, s0, dims, r, g, b);
        }
        _ => {
            // Unreachable: `check_planes` checked the plane count.
            return Err(FrameError::PlaneCount {
                format,
                expected: format.n_planes(),
                got: n_planes,
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sizes and padding.

fn round_up(n: usize, multiple_of: u32) -> Option<usize> {
    n.checked_next_multiple_of(usize::try_from(multiple_of.max(1)).ok()?)
}

fn min_plane_len(stride: usize, row_bytes: usize, rows: usize) -> Option<usize> {
    match rows {
        0 => Some(0),
        _ => stride.checked_mul(rows - 1)?.checked_add(row_bytes),
    }
}

fn tensor_len(hp: usize, wp: usize) -> Result<usize, FrameError> {
    hp.checked_mul(wp)
        .and_then(|p| p.checked_mul(3))
        .ok_or(FrameError::TensorTooLarge { hp, wp })
}

/// Checks the tensor length against `3*hp*wp`; returns the plane size `hp*wp`.
fn check_tensor_len(hp: usize, wp: usize, got: usize) -> Result<usize, FrameError> {
    let expected = tensor_len(hp, wp)?;
    if got != expected {
        return Err(FrameError::TensorLength {
            hp,
            wp,
            expected,
            got,
        });
    }
    Ok(expected / 3)
}

/// Maps `i` into `[0, n)` by mirroring without repeating the edge (period 2(n−1)); `n == 1` maps
/// everything to 0. `n` must be non-zero.
#[inline]
fn reflect(i: usize, n: usize) -> usize {
    if i < n {
        return i;
    }
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i % period;
    if m < n { m } else { period - m }
}

/// Fills the padding of one `hp`×`wp` tensor plane whose top-left `h`×`w` region holds the image.
fn pad_plane(plane: &mut [f32], w: usize, h: usize, wp: usize, hp: usize) {
    if wp > w {
        for row in plane.chunks_exact_mut(wp).take(h) {
            for x in w..wp {
                row[x] = row[reflect(x, w)];
            }
        }
    }
    for y in h..hp {
        let src = reflect(y, h) * wp;
        plane.copy_within(src..src + wp, y * wp);
    }
}

/// Image and tensor row geometry shared by the row loops.
#[derive(Clone, Copy)]
struct Dims {
    w: usize,
    h: usize,
    wp: usize,
}

/// The `rows` rows of a plane, each cropped to `row_bytes`. The plane must have passed
/// [`FrameLayout::check_planes`] for this geometry.
fn rows_mut(
    plane: &mut [u8],
    stride: usize,
    row_bytes: usize,
    rows: usize,
) -> impl Iterator<Item = &mut [u8]> {
    let mut rest = plane;
    (0..rows).map(move |i| {
        let taken = std::mem::take(&mut rest);
        let row = if i + 1 < rows {
            let (row, next) = taken.split_at_mut(stride);
            rest = next;
            row
        } else {
            taken
        };
        &mut row[..row_bytes]
    })
}

/// The first `h` rows of three tensor planes, each cropped to `w`.
fn tensor_rows_mut<'a>(
    d: Dims,
    r: &'a mut [f32],
    g: &'a mut [f32],
    b: &'a mut [f32],
) -> impl Iterator<Item = ((&'a mut [f32], &'a mut [f32]), &'a mut [f32])> {
    let rows = move |p: &'a mut [f32]| {
        p.chunks_exact_mut(d.wp)
            .take(d.h)
            .map(move |r| &mut r[..d.w])
    };
    rows(r).zip(rows(g)).zip(rows(b))
}

// ---------------------------------------------------------------------------------------------
// The packed RGB family.

/// `v / 255` for every byte value.
static U8_TO_F32: [f32; 256] = {
    let mut t = [0.0; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as f32 / 255.0;
        i += 1;
    }
    t
};

#[inline(always)]
#[allow(clippy::manual_clamp, reason = "`clamp` keeps NaN; this maps it to 0")]
fn clamp01(v: f32) -> f32 {
    // `max` first so that NaN becomes 0.
    v.max(0.0).min(1.0)
}

/// f32 → u8: clamp to [0,1], then `(v * 255 + 0.5) as u8` (round half up).
#[inline(always)]
fn to_u8(v: f32) -> u8 {
    floor_in_range(clamp01(v) * 255.0 + 0.5)
}

/// `x as u8` (saturating, truncating) for any `x`, NaN giving 0.
#[inline(always)]
#[allow(clippy::manual_clamp, reason = "`clamp` keeps NaN; this maps it to 0")]
fn floor_u8(x: f32) -> u8 {
    floor_in_range(x.max(0.0).min(255.0))
}

/// `x as u8` for `x` in [0, 255.5], written so that it vectorises: Rust's saturating float → int
/// casts compile to scalar code with branches, so this floors with the 2²³ trick instead.
/// `x + 2²³` holds round-to-nearest(x) in its low mantissa bits (exactly, as x < 2²³); take one
/// off where that rounded up (256 for 255.5 wraps to 255).
#[inline(always)]
fn floor_in_range(x: f32) -> u8 {
    const MAGIC: f32 = 8_388_608.0; // 2^23
    let t = x + MAGIC;
    let rounded_up = u32::from(t - MAGIC > x);
    t.to_bits().wrapping_sub(rounded_up) as u8
}

type ReadFn = fn(&[u8], usize, Dims, &mut [f32], &mut [f32], &mut [f32]);
type WriteFn = fn(&mut [u8], usize, Dims, &[f32], &[f32], &[f32]);

/// The row converters for a packed format, monomorphised on bytes per pixel and R, G, B offsets.
fn packed_fns(format: PixelFormat) -> Option<(ReadFn, WriteFn)> {
    macro_rules! fns {
        ($n:literal, $r:literal, $g:literal, $b:literal) => {
            Some((
                packed_to_tensor::<$n, $r, $g, $b> as ReadFn,
                tensor_to_packed::<$n, $r, $g, $b> as WriteFn,
            ))
        };
    }
    match format {
        PixelFormat::Rgb => fns!(3, 0, 1, 2),
        PixelFormat::Bgr => fns!(3, 2, 1, 0),
        PixelFormat::Rgba | PixelFormat::Rgbx => fns!(4, 0, 1, 2),
        PixelFormat::Bgra | PixelFormat::Bgrx => fns!(4, 2, 1, 0),
        PixelFormat::Argb | PixelFormat::Xrgb => fns!(4, 1, 2, 3),
        PixelFormat::Abgr | PixelFormat::Xbgr => fns!(4, 3, 2, 1),
        PixelFormat::I420 | PixelFormat::Nv12 => None,
    }
}

fn packed_to_tensor<const N: usize, const R: usize, const G: usize, const B: usize>(
    src: &[u8],
    stride: usize,
    d: Dims,
    r: &mut [f32],
    g: &mut [f32],
    b: &mut [f32],
) {
    let lut = &U8_TO_F32;
    for (y, ((r, g), b)) in tensor_rows_mut(d, r, g, b).enumerate() {
        let (px, _) = src[y * stride..][..d.w * N].as_chunks::<N>();
        for (((p, r), g), b) in px.iter().zip(r).zip(g).zip(b) {
            *r = lut[usize::from(p[R])];
            *g = lut[usize::from(p[G])];
            *b = lut[usize::from(p[B])];
        }
    }
}

fn tensor_to_packed<const N: usize, const R: usize, const G: usize, const B: usize>(
    dst: &mut [u8],
    stride: usize,
    d: Dims,
    r: &[f32],
    g: &[f32],
    b: &[f32],
) {
    // Quantise a chunk of each plane row into contiguous bytes (vectorises), then interleave.
    let mut q = [[0u8; CHUNK]; 3];
    for y in 0..d.h {
        let (px, _) = dst[y * stride..][..d.w * N].as_chunks_mut::<N>();
        let row = y * d.wp;
        let planes = [&r[row..][..d.w], &g[row..][..d.w], &b[row..][..d.w]];
        for (i, px) in px.chunks_mut(CHUNK).enumerate() {
            let n = px.len();
            for (q, src) in q.iter_mut().zip(planes) {
                quantise(&src[i * CHUNK..][..n], &mut q[..n]);
            }
            let [qr, qg, qb] = q.each_ref().map(|q| q[..n].as_chunks::<4>());
            let (quads, rest) = px.as_chunks_mut::<4>();
            // Four pixels at a time: the compiler merges the byte moves into word operations.
            for (((quad, r), g), b) in quads.iter_mut().zip(qr.0).zip(qg.0).zip(qb.0) {
                let mut out = *quad;
                for j in 0..4 {
                    out[j][R] = r[j];
                    out[j][G] = g[j];
                    out[j][B] = b[j];
                }
                *quad = out;
            }
            for (((p, &r), &g), &b) in rest.iter_mut().zip(qr.1).zip(qg.1).zip(qb.1) {
                p[R] = r;
                p[G] = g;
                p[B] = b;
            }
        }
    }
}

/// Pixels per chunk in the staged (quantise, then interleave) loops; even.
const CHUNK: usize = 64;

/// `to_u8` over a slice; `dst` and `src` have the same length.
#[inline(always)]
fn quantise(src: &[f32], dst: &mut [u8]) {
    // Sixteen at a time, so that the bytes leave in one 16-byte store.
    let (d16, d1) = dst.as_chunks_mut::<16>();
    let (s16, s1) = src.as_chunks::<16>();
    for (d, s) in d16.iter_mut().zip(s16) {
        *d = s.map(to_u8);
    }
    for (d, &s) in d1.iter_mut().zip(s1) {
        *d = to_u8(s);
    }
}

// ---------------------------------------------------------------------------------------------
// YUV 4:2:0.

/// The matrix and range in f64: Y' = Kr·R + Kg·G + Kb·B; byte = offset + scale·value.
struct Matrix {
    kr: f64,
    kg: f64,
    kb: f64,
    y_off: f64,
    y_scale: f64,
    c_scale: f64,
}

impl Matrix {
    fn new(c: YuvColorimetry) -> Matrix {
        let (kr, kb) = c.matrix.kr_kb();
        let (y_off, y_scale, c_scale) = if c.full_range {
            (0.0, 255.0, 255.0)
        } else {
            (16.0, 219.0, 224.0)
        };
        Matrix {
            kr,
            kg: 1.0 - kr - kb,
            kb,
            y_off,
            y_scale,
            c_scale,
        }
    }
}

/// YUV bytes → RGB contributions: R = y + rv, G = y − gu − gv, B = y + bu (then clamped).
/// Public for the element's rain score, which bins YUV frames straight from their planes.
pub struct YuvDecode {
    y: [f32; 256],
    rv: [f32; 256],
    gu: [f32; 256],
    gv: [f32; 256],
    bu: [f32; 256],
}

impl YuvDecode {
    /// Y in [0,1] of a luma byte (before any clamping).
    #[inline(always)]
    pub fn luma(&self, y: u8) -> f32 {
        self.y[usize::from(y)]
    }

    /// The R, G and B contributions of one chroma sample: R = y + cr, G = y − cg, B = y + cb.
    #[inline(always)]
    pub fn chroma(&self, u: u8, v: u8) -> (f32, f32, f32) {
        let (u, v) = (usize::from(u), usize::from(v));
        (self.rv[v], self.gu[u] + self.gv[v], self.bu[u])
    }

    /// The tables of colorimetry `c`.
    pub fn new(c: YuvColorimetry) -> YuvDecode {
        let m = Matrix::new(c);
        let (kr, kg, kb) = (m.kr, m.kg, m.kb);
        let chroma = |i: usize| (i as f64 - 128.0) / m.c_scale;
        let table = |k: f64| std::array::from_fn(|i| (k * chroma(i)) as f32);
        YuvDecode {
            y: std::array::from_fn(|i| ((i as f64 - m.y_off) / m.y_scale) as f32),
            rv: table(2.0 * (1.0 - kr)),
            gu: table(2.0 * kb * (1.0 - kb) / kg),
            gv: table(2.0 * kr * (1.0 - kr) / kg),
            bu: table(2.0 * (1.0 - kb)),
        }
    }
}

/// The decoding tables of `c` as the GPU conversion takes them (`cuda` feature): Y, then the
/// R-from-V, G-from-U, G-from-V and B-from-U contributions, 256 values each.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn yuv_decode_tables(c: YuvColorimetry) -> Vec<f32> {
    let t = YuvDecode::new(c);
    [t.y, t.rv, t.gu, t.gv, t.bu].concat()
}

/// One row: Y bytes, the row's (U, V) samples (one per 2 pixels), and the tensor rows.
#[inline(always)]
fn yuv_row_to_tensor(
    t: &YuvDecode,
    yrow: &[u8],
    mut uv: impl Iterator<Item = (u8, u8)>,
    r: &mut [f32],
    g: &mut [f32],
    b: &mut [f32],
) {
    let (yp, yt) = yrow.as_chunks::<2>();
    let (rp, rt) = r.as_chunks_mut::<2>();
    let (gp, gt) = g.as_chunks_mut::<2>();
    let (bp, bt) = b.as_chunks_mut::<2>();
    let px = |y: u8, cr: f32, cg: f32, cb: f32| {
        let y = t.y[usize::from(y)];
        (clamp01(y + cr), clamp01(y - cg), clamp01(y + cb))
    };
    let chroma = |(u, v): (u8, u8)| {
        let (u, v) = (usize::from(u), usize::from(v));
        (t.rv[v], t.gu[u] + t.gv[v], t.bu[u])
    };
    // `yp` first: the zip stops before taking a chroma sample that the tail needs.
    for ((((ys, c), rs), gs), bs) in yp.iter().zip(&mut uv).zip(rp).zip(gp).zip(bp) {
        let (cr, cg, cb) = chroma(c);
        for k in 0..2 {
            (rs[k], gs[k], bs[k]) = px(ys[k], cr, cg, cb);
        }
    }
    if let ([y], [r], [g], [b], Some(c)) = (yt, rt, gt, bt, uv.next()) {
        let (cr, cg, cb) = chroma(c);
        (*r, *g, *b) = px(*y, cr, cg, cb);
    }
}

/// RGB → YUV bytes: Y = y0 + yr·R + yg·G + yb·B, U = c0 + ur·R + ug·G + ub·B, V likewise (the
/// 0.5 of rounding folded into y0 and c0).
struct YuvEncode {
    y: [f32; 3],
    u: [f32; 3],
    v: [f32; 3],
    y0: f32,
    c0: f32,
}

impl YuvEncode {
    fn new(c: YuvColorimetry) -> YuvEncode {
        let m = Matrix::new(c);
        let (kr, kg, kb) = (m.kr, m.kg, m.kb);
        let cb = m.c_scale / (2.0 * (1.0 - kb));
        let cr = m.c_scale / (2.0 * (1.0 - kr));
        let f = |v: [f64; 3]| v.map(|x| x as f32);
        YuvEncode {
            y: f([m.y_scale * kr, m.y_scale * kg, m.y_scale * kb]),
            u: f([-kr * cb, -kg * cb, (1.0 - kb) * cb]),
            v: f([(1.0 - kr) * cr, -kg * cr, -kb * cr]),
            y0: (m.y_off + 0.5) as f32,
            c0: 128.5,
        }
    }

    /// Y byte of one clamped pixel.
    #[inline(always)]
    fn luma(&self, r: f32, g: f32, b: f32) -> u8 {
        floor_u8(self.y0 + self.y[0] * r + self.y[1] * g + self.y[2] * b)
    }

    /// U and V bytes of the mean colour `scale * sum`.
    #[inline(always)]
    fn chroma(&self, sum: [f32; 3], scale: f32) -> (u8, u8) {
        let [r, g, b] = sum.map(|v| v * scale);
        let u = self.c0 + self.u[0] * r + self.u[1] * g + self.u[2] * b;
        let v = self.c0 + self.v[0] * r + self.v[1] * g + self.v[2] * b;
        (floor_u8(u), floor_u8(v))
    }
}

/// The encoding coefficients of `c` as the GPU conversion takes them (`cuda` feature): the Y, U
/// and V weights of R, G and B, then the Y and chroma offsets (rounding included).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn yuv_encode_coefficients(c: YuvColorimetry) -> [f32; 11] {
    let k = YuvEncode::new(c);
    [
        k.y[0], k.y[1], k.y[2], k.u[0], k.u[1], k.u[2], k.v[0], k.v[1], k.v[2], k.y0, k.c0,
    ]
}

/// One chroma row being written: U and V planes (I420) or interleaved U,V pairs (NV12).
enum ChromaRowMut<'a> {
    Planar(&'a mut [u8], &'a mut [u8]),
    Interleaved(&'a mut [u8]),
}

impl ChromaRowMut<'_> {
    /// Writes `u.len()` (== `v.len()`) samples from sample `at` on.
    #[inline(always)]
    fn put(&mut self, at: usize, u: &[u8], v: &[u8]) {
        match self {
            ChromaRowMut::Planar(ur, vr) => {
                ur[at..][..u.len()].copy_from_slice(u);
                vr[at..][..v.len()].copy_from_slice(v);
            }
            ChromaRowMut::Interleaved(uv) => {
                let (pairs, _) = uv[2 * at..][..2 * u.len()].as_chunks_mut::<2>();
                for ((p, &u), &v) in pairs.iter_mut().zip(u).zip(v) {
                    *p = [u, v];
                }
            }
        }
    }
}

/// Writes a whole frame from the tensor planes: `luma` yields the Y rows, `chroma` the chroma
/// rows.
fn yuv_from_tensor<'a>(
    k: &YuvEncode,
    d: Dims,
    [r, g, b]: [&[f32]; 3],
    mut luma: impl Iterator<Item = &'a mut [u8]>,
    chroma: impl Iterator<Item = ChromaRowMut<'a>>,
) {
    let Dims { w, wp, .. } = d;
    let rows = |t: usize| [&r[t * wp..][..w], &g[t * wp..][..w], &b[t * wp..][..w]];
    let mut scratch = Vec::new();
    for (c, uv) in chroma.enumerate() {
        let t = 2 * c;
        let Some(top) = luma.next() else { break };
        match luma.next() {
            Some(bottom) => yuv_rows_from_tensor(k, rows(t), rows(t + 1), top, bottom, uv),
            None => {
                // The last chroma row of an odd height covers one image row: pair it with itself.
                scratch.resize(w, 0);
                yuv_rows_from_tensor(k, rows(t), rows(t), top, &mut scratch, uv);
            }
        }
    }
}

/// Two image rows sharing one chroma row, in chunks: Y per pixel (contiguous, vectorises) while
/// summing the clamped colours per column, then chroma from the sums of column pairs.
#[inline(always)]
fn yuv_rows_from_tensor(
    k: &YuvEncode,
    top: [&[f32]; 3],
    bottom: [&[f32]; 3],
    y0: &mut [u8],
    y1: &mut [u8],
    mut uv: ChromaRowMut<'_>,
) {
    let w = y0.len();
    let mut sums = [[0.0f32; CHUNK]; 3];
    let mut u = [0u8; CHUNK / 2];
    let mut v = [0u8; CHUNK / 2];
    for start in (0..w).step_by(CHUNK) {
        let n = CHUNK.min(w - start);
        let (t, b) = (
            top.map(|s| &s[start..][..n]),
            bottom.map(|s| &s[start..][..n]),
        );
        luma_chunk::<false>(k, t, &mut y0[start..][..n], &mut sums);
        luma_chunk::<true>(k, b, &mut y1[start..][..n], &mut sums);
        let [sr, sg, sb] = sums.each_ref().map(|s| s[..n].as_chunks::<2>());
        let pairs = sr.0.len();
        for ((((&[r0, r1], &[g0, g1]), &[b0, b1]), u), v) in
            sr.0.iter().zip(sg.0).zip(sb.0).zip(&mut u).zip(&mut v)
        {
            (*u, *v) = k.chroma([r0 + r1, g0 + g1, b0 + b1], 0.25);
        }
        if let ([r], [g], [b]) = (sr.1, sg.1, sb.1) {
            (u[pairs], v[pairs]) = k.chroma([*r, *g, *b], 0.5);
        }
        let nc = n.div_ceil(2);
        uv.put(start / 2, &u[..nc], &v[..nc]);
    }
}

/// Y bytes of one row chunk; stores (or, with `ADD`, adds) the clamped colours into `sums`.
#[inline(always)]
fn luma_chunk<const ADD: bool>(
    k: &YuvEncode,
    [r, g, b]: [&[f32]; 3],
    y: &mut [u8],
    sums: &mut [[f32; CHUNK]; 3],
) {
    let n = y.len();
    let (r, g, b) = (&r[..n], &g[..n], &b[..n]);
    let [sr, sg, sb] = sums;
    let (sr, sg, sb) = (&mut sr[..n], &mut sg[..n], &mut sb[..n]);
    for i in 0..n {
        let (r, g, b) = (clamp01(r[i]), clamp01(g[i]), clamp01(b[i]));
        y[i] = k.luma(r, g, b);
        if ADD {
            sr[i] += r;
            sg[i] += g;
            sb[i] += b;
        } else {
            sr[i] = r;
            sg[i] = g;
            sb[i] = b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const SENTINEL: u8 = 0xA5;
    const MULTIPLES: [u32; 3] = [1, 4, 8];

    /// (width, height): the fixed sizes plus a few random ones.
    fn sizes() -> Vec<(usize, usize)> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut sizes = vec![(1, 1), (1, 7), (7, 1), (3, 5), (5, 3), (2, 2), (641, 359)];
        for _ in 0..4 {
            sizes.push((rng.random_range(1..=40), rng.random_range(1..=40)));
        }
        sizes
    }

    /// Layout with every stride rounded up to 4 plus 3 bytes, so rows never touch.
    fn strided(format: PixelFormat, width: usize, height: usize) -> FrameLayout {
        let mut layout = FrameLayout::packed(format, width, height);
        for s in &mut layout.strides[..format.n_planes()] {
            *s = s.next_multiple_of(4) + 3;
        }
        layout
    }

    /// Planes of exactly the minimum length (the last row has no stride padding).
    fn planes_filled(layout: &FrameLayout, byte: u8) -> Vec<Vec<u8>> {
        (0..layout.format.n_planes())
            .map(|p| vec![byte; layout.plane_len(p)])
            .collect()
    }

    fn planes_random(layout: &FrameLayout, rng: &mut ChaCha8Rng) -> Vec<Vec<u8>> {
        let mut planes = planes_filled(layout, 0);
        for p in &mut planes {
            rng.fill(p.as_mut_slice());
        }
        planes
    }

    fn to_tensor(layout: &FrameLayout, planes: &[Vec<u8>], m: u32) -> (Vec<f32>, usize, usize) {
        let (hp, wp) = padded_size(layout.height, layout.width, m);
        let mut t = vec![f32::NAN; 3 * hp * wp];
        let refs: Vec<&[u8]> = planes.iter().map(Vec::as_slice).collect();
        assert_eq!(frame_to_tensor(layout, &refs, m, &mut t), Ok((hp, wp)));
        (t, hp, wp)
    }

    fn to_frame(t: &[f32], hp: usize, wp: usize, layout: &FrameLayout, planes: &mut [Vec<u8>]) {
        let mut refs: Vec<&mut [u8]> = planes.iter_mut().map(Vec::as_mut_slice).collect();
        tensor_to_frame(t, hp, wp, layout, &mut refs).unwrap();
    }

    /// Reflect by repeated mirroring, independent of `reflect`.
    fn ref_reflect(i: usize, n: usize) -> usize {
        if n == 1 {
            return 0;
        }
        let (mut i, n) = (i as i64, n as i64);
        while i >= n || i < 0 {
            i = if i >= n { 2 * (n - 1) - i } else { -i };
        }
        i as usize
    }

    #[test]
    fn reflect_matches_repeated_mirroring() {
        for n in 1..12 {
            for i in 0..100 {
                assert_eq!(reflect(i, n), ref_reflect(i, n), "i {i} n {n}");
            }
        }
        // numpy.pad([0, 1, 2], (0, 6), 'reflect') == [0 1 2 1 0 1 2 1 0]
        let got: Vec<usize> = (0..9).map(|i| reflect(i, 3)).collect();
        assert_eq!(got, [0, 1, 2, 1, 0, 1, 2, 1, 0]);
    }

    #[test]
    fn padded_sizes() {
        assert_eq!(padded_size(720, 1280, 8), (720, 1280));
        assert_eq!(padded_size(359, 641, 4), (360, 644));
        assert_eq!(padded_size(1, 1, 8), (8, 8));
        assert_eq!(padded_size(5, 3, 0), (5, 3));
        assert_eq!(padded_size(5, 3, 1), (5, 3));
        assert_eq!(padded_size(usize::MAX, 3, 8), (usize::MAX, 8));
    }

    #[test]
    fn format_names_parse_back() {
        for f in PixelFormat::ALL {
            assert_eq!(f.name().parse::<PixelFormat>(), Ok(f));
            assert_eq!(f.to_string().to_lowercase().parse::<PixelFormat>(), Ok(f));
            assert_eq!(f.bytes_per_pixel().is_none(), f.is_yuv());
            assert_eq!(f.rgb_offsets().is_none(), f.is_yuv());
        }
        let err = "YUY2".parse::<PixelFormat>().unwrap_err();
        assert!(err.to_string().contains("YUY2"), "{err}");
    }

    #[test]
    fn quantisation_matches_the_cast() {
        // The exact round trip of every byte.
        for v in 0..=255u8 {
            assert_eq!(to_u8(U8_TO_F32[usize::from(v)]), v);
            assert_eq!(U8_TO_F32[usize::from(v)], f32::from(v) / 255.0);
        }
        // `floor_u8` is `x as u8` everywhere, including around every integer and half.
        let mut xs = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            1e30,
            -1e30,
        ];
        for k in -2..300 {
            for base in [k as f32, k as f32 + 0.5] {
                xs.extend([base, base.next_up(), base.next_down()]);
            }
        }
        let mut bits = (-10.0f32).to_bits();
        while bits > 0x8000_0000 {
            xs.push(f32::from_bits(bits));
            bits -= 997;
        }
        let mut bits = 0u32;
        while f32::from_bits(bits) < 300.0 {
            xs.push(f32::from_bits(bits));
            bits += 997;
        }
        for &x in &xs {
            assert_eq!(floor_u8(x), x as u8, "x = {x:e}");
            // And `to_u8` is the documented formula.
            let v = x / 255.0;
            assert_eq!(
                to_u8(v),
                (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8,
                "v = {v:e}"
            );
        }
    }

    /// RGB family: exact round trip, reflect padding against a brute-force reference, and no byte
    /// outside the colour bytes (alpha, x, stride padding) written by `tensor_to_frame`.
    #[test]
    fn rgb_family_round_trip_padding_and_untouched_bytes() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for format in PixelFormat::ALL.into_iter().filter(|f| !f.is_yuv()) {
            let bpp = format.bytes_per_pixel().unwrap();
            let offsets = format.rgb_offsets().unwrap();
            for (w, h) in sizes() {
                let layout = strided(format, w, h);
                let stride = layout.strides[0];
                let src = planes_random(&layout, &mut rng);
                let byte = |c: usize, y: usize, x: usize| src[0][y * stride + x * bpp + offsets[c]];
                for m in MULTIPLES {
                    let ctx = format!("{format} {w}x{h} multiple_of {m}");
                    let (t, hp, wp) = to_tensor(&layout, &src, m);
                    assert_eq!((hp % m as usize, wp % m as usize), (0, 0), "{ctx}");
                    for c in 0..3 {
                        for y in 0..hp {
                            for x in 0..wp {
                                let b = byte(c, ref_reflect(y, h), ref_reflect(x, w));
                                let got = t[(c * hp + y) * wp + x];
                                assert!(got == f32::from(b) / 255.0, "{ctx}: c{c} ({x},{y}) {got}");
                            }
                        }
                    }
                    let mut dst = planes_filled(&layout, SENTINEL);
                    to_frame(&t, hp, wp, &layout, &mut dst);
                    for (i, &got) in dst[0].iter().enumerate() {
                        let (y, in_row) = (i / stride, i % stride);
                        let (x, k) = (in_row / bpp, in_row % bpp);
                        let expected = match offsets.iter().position(|&o| o == k) {
                            Some(c) if x < w => byte(c, y, x),
                            _ => SENTINEL,
                        };
                        assert_eq!(got, expected, "{ctx}: byte {i} (x {x}, y {y}, k {k})");
                    }
                }
            }
        }
    }

    struct RefMatrix {
        kr: f64,
        kb: f64,
        y_off: f64,
        y_scale: f64,
        c_scale: f64,
    }

    fn ref_matrix(c: YuvColorimetry) -> RefMatrix {
        let (kr, kb) = match c.matrix {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
            YuvMatrix::Bt2020 => (0.2627, 0.0593),
        };
        let (y_off, y_scale, c_scale) = match c.full_range {
            true => (0.0, 255.0, 255.0),
            false => (16.0, 219.0, 224.0),
        };
        RefMatrix {
            kr,
            kb,
            y_off,
            y_scale,
            c_scale,
        }
    }

    /// Reference YUV bytes → RGB in [0,1].
    fn ref_yuv_to_rgb(m: &RefMatrix, y: u8, u: u8, v: u8) -> [f64; 3] {
        let kg = 1.0 - m.kr - m.kb;
        let yn = (f64::from(y) - m.y_off) / m.y_scale;
        let pb = (f64::from(u) - 128.0) / m.c_scale;
        let pr = (f64::from(v) - 128.0) / m.c_scale;
        let r = yn + 2.0 * (1.0 - m.kr) * pr;
        let b = yn + 2.0 * (1.0 - m.kb) * pb;
        let g = (yn - m.kr * r - m.kb * b) / kg;
        [r, g, b].map(|c| c.clamp(0.0, 1.0))
    }

    /// Reference RGB in [0,1] → unrounded (Y, U, V) byte values.
    fn ref_rgb_to_yuv(m: &RefMatrix, [r, g, b]: [f64; 3]) -> [f64; 3] {
        let y = m.kr * r + (1.0 - m.kr - m.kb) * g + m.kb * b;
        [
            m.y_off + m.y_scale * y,
            128.0 + m.c_scale * (b - y) / (2.0 * (1.0 - m.kb)),
            128.0 + m.c_scale * (r - y) / (2.0 * (1.0 - m.kr)),
        ]
    }

    /// Reads (Y, U, V) of pixel (x, y) from I420 / NV12 planes.
    fn yuv_at(layout: &FrameLayout, planes: &[Vec<u8>], x: usize, y: usize) -> [u8; 3] {
        let s = layout.strides;
        let luma = planes[0][y * s[0] + x];
        let (cx, cy) = (x / 2, y / 2);
        match layout.format {
            PixelFormat::I420 => [luma, planes[1][cy * s[1] + cx], planes[2][cy * s[2] + cx]],
            _ => [
                luma,
                planes[1][cy * s[1] + 2 * cx],
                planes[1][cy * s[1] + 2 * cx + 1],
            ],
        }
    }

    /// Whether byte `i` of plane `p` is image data (not stride padding).
    fn is_image_byte(layout: &FrameLayout, p: usize, i: usize) -> bool {
        let (row_bytes, _) = layout.plane_geometry(p).unwrap();
        i % layout.strides[p] < row_bytes
    }

    fn colorimetries(big: bool) -> Vec<YuvColorimetry> {
        let all = [YuvMatrix::Bt601, YuvMatrix::Bt709, YuvMatrix::Bt2020]
            .into_iter()
            .flat_map(|matrix| {
                [false, true].map(|full_range| YuvColorimetry { matrix, full_range })
            });
        match big {
            // Keep the debug-build test time down on the large frame.
            true => all
                .filter(|c| c.full_range == (c.matrix == YuvMatrix::Bt709))
                .collect(),
            false => all.collect(),
        }
    }

    /// YUV → tensor against a reference conversion with nearest chroma; padding reflects.
    #[test]
    fn yuv_to_tensor_matches_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            for (w, h) in sizes() {
                for c in colorimetries(w * h > 10_000) {
                    let layout = strided(format, w, h).with_colorimetry(c);
                    let src = planes_random(&layout, &mut rng);
                    let m = ref_matrix(c);
                    for mult in MULTIPLES {
                        let ctx = format!("{format} {w}x{h} {c:?} multiple_of {mult}");
                        let (t, hp, wp) = to_tensor(&layout, &src, mult);
                        let at = |ch: usize, y: usize, x: usize| t[(ch * hp + y) * wp + x];
                        for y in 0..hp {
                            for x in 0..wp {
                                let (ry, rx) = (ref_reflect(y, h), ref_reflect(x, w));
                                let [yy, u, v] = yuv_at(&layout, &src, rx, ry);
                                let expected = ref_yuv_to_rgb(&m, yy, u, v);
                                for (ch, e) in expected.into_iter().enumerate() {
                                    let got = at(ch, y, x);
                                    assert!((f64::from(got) - e).abs() < 1e-5, "{ctx} ({x},{y})");
                                    assert_eq!(got, at(ch, ry, rx), "{ctx}: padding ({x},{y})");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Tensor → YUV against a reference (Y per pixel, chroma averaged over the cropped 2×2
    /// block); stride padding untouched; out-of-range and NaN values clamped.
    #[test]
    fn tensor_to_yuv_matches_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            for (w, h) in sizes() {
                for c in colorimetries(w * h > 10_000) {
                    let layout = strided(format, w, h).with_colorimetry(c);
                    let m = ref_matrix(c);
                    let mult = 4;
                    let (hp, wp) = padded_size(h, w, mult);
                    let mut t: Vec<f32> = (0..3 * hp * wp)
                        .map(|_| rng.random_range(-0.1..1.1))
                        .collect();
                    t[0] = f32::NAN;
                    let rgb = |x: usize, y: usize| {
                        [0, 1, 2].map(|ch| {
                            let v = t[(ch * hp + y) * wp + x];
                            if v.is_nan() {
                                0.0
                            } else {
                                f64::from(v).clamp(0.0, 1.0)
                            }
                        })
                    };
                    let mut dst = planes_filled(&layout, SENTINEL);
                    to_frame(&t, hp, wp, &layout, &mut dst);
                    let ctx = format!("{format} {w}x{h} {c:?}");
                    for y in 0..h {
                        for x in 0..w {
                            let [yy, u, v] = yuv_at(&layout, &dst, x, y);
                            let e = ref_rgb_to_yuv(&m, rgb(x, y))[0];
                            assert!((f64::from(yy) - e).abs() <= 0.51, "{ctx} Y ({x},{y})");
                            let (bx, by) = (x / 2 * 2, y / 2 * 2);
                            let block: Vec<_> = [(0, 0), (1, 0), (0, 1), (1, 1)]
                                .into_iter()
                                .map(|(dx, dy)| (bx + dx, by + dy))
                                .filter(|&(x, y)| x < w && y < h)
                                .collect();
                            let mut mean = [0.0; 3];
                            for &(x, y) in &block {
                                for (acc, v) in mean.iter_mut().zip(rgb(x, y)) {
                                    *acc += v / block.len() as f64;
                                }
                            }
                            let [_, eu, ev] = ref_rgb_to_yuv(&m, mean);
                            let (eu, ev) = (eu.clamp(0.0, 255.0), ev.clamp(0.0, 255.0));
                            assert!((f64::from(u) - eu).abs() <= 0.51, "{ctx} U ({x},{y})");
                            assert!((f64::from(v) - ev).abs() <= 0.51, "{ctx} V ({x},{y})");
                        }
                    }
                    for (p, plane) in dst.iter().enumerate() {
                        for (i, &b) in plane.iter().enumerate() {
                            if !is_image_byte(&layout, p, i) {
                                assert_eq!(b, SENTINEL, "{ctx}: plane {p} byte {i}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Smooth gradients plus mild texture, as a padded tensor.
    fn natural_tensor(w: usize, h: usize, hp: usize, wp: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let mut t = vec![0.0; 3 * hp * wp];
        for ch in 0..3 {
            let phase = ch as f32 * 1.3;
            for y in 0..h {
                for x in 0..w {
                    let (xf, yf) = (x as f32, y as f32);
                    let smooth = 0.5 + 0.3 * (xf * 0.011 + yf * 0.007 + phase).sin();
                    let texture = 0.04 * (xf * 0.9 + phase).sin() * (yf * 0.7).cos();
                    let noise = rng.random_range(-0.01..0.01);
                    t[(ch * hp + y) * wp + x] = smooth + texture + noise;
                }
            }
        }
        t
    }

    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        let mse = a
            .iter()
            .zip(b)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        // Identical images give infinity.
        10.0 * (255.0 * 255.0 / mse).log10()
    }

    /// YUV bytes straight from a "camera": smooth luma with texture, gently varying chroma.
    fn natural_yuv(layout: &FrameLayout, rng: &mut ChaCha8Rng) -> Vec<Vec<u8>> {
        let mut planes = planes_filled(layout, SENTINEL);
        let s = layout.strides;
        let (w, h) = (layout.width, layout.height);
        for y in 0..h {
            for x in 0..w {
                let (xf, yf) = (x as f32, y as f32);
                let luma = 110.0
                    + 70.0 * (xf * 0.013 - yf * 0.009).sin()
                    + 8.0 * (xf * 1.1).sin() * (yf * 0.8).cos()
                    + rng.random_range(-2.0..2.0);
                planes[0][y * s[0] + x] = luma as u8;
            }
        }
        for cy in 0..h.div_ceil(2) {
            for cx in 0..w.div_ceil(2) {
                let (xf, yf) = (cx as f32, cy as f32);
                let u = (128.0 + 18.0 * (xf * 0.02 + yf * 0.03).sin()) as u8;
                let v = (128.0 + 18.0 * (xf * 0.025 - yf * 0.02).cos()) as u8;
                match layout.format {
                    PixelFormat::I420 => {
                        planes[1][cy * s[1] + cx] = u;
                        planes[2][cy * s[2] + cx] = v;
                    }
                    _ => {
                        planes[1][cy * s[1] + 2 * cx] = u;
                        planes[1][cy * s[1] + 2 * cx + 1] = v;
                    }
                }
            }
        }
        planes
    }

    /// YUV → tensor → YUV on natural content keeps PSNR ≥ 40 dB (image bytes of all planes), for
    /// YUV made by `tensor_to_frame` from an RGB image and for YUV made directly; and RGB → YUV →
    /// RGB keeps the RGB image at ≥ 30 dB (4:2:0 loses chroma detail).
    #[test]
    fn yuv_round_trip_psnr() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (mut worst_yuv, mut worst_rgb) = (f64::INFINITY, f64::INFINITY);
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            for (w, h) in sizes() {
                for c in colorimetries(w * h > 10_000) {
                    let layout = strided(format, w, h).with_colorimetry(c);
                    let image = |planes: &[Vec<u8>]| -> Vec<u8> {
                        let mut v = Vec::new();
                        for (p, plane) in planes.iter().enumerate() {
                            let bytes = plane.iter().enumerate();
                            let image = bytes.filter(|&(i, _)| is_image_byte(&layout, p, i));
                            v.extend(image.map(|(_, &b)| b));
                        }
                        v
                    };
                    let rgb_image = |t: &[f32], hp: usize, wp: usize| -> Vec<u8> {
                        let rows = t.chunks(wp).enumerate().filter(|(i, _)| i % hp < h);
                        rows.flat_map(|(_, row)| row[..w].iter().map(|&v| to_u8(v)))
                            .collect()
                    };
                    for mult in MULTIPLES {
                        let ctx = format!("{format} {w}x{h} {c:?} multiple_of {mult}");
                        let (hp, wp) = padded_size(h, w, mult);
                        let natural = natural_tensor(w, h, hp, wp, &mut rng);
                        let mut from_rgb = planes_filled(&layout, SENTINEL);
                        to_frame(&natural, hp, wp, &layout, &mut from_rgb);
                        let direct = natural_yuv(&layout, &mut rng);
                        for yuv in [&from_rgb, &direct] {
                            let (t, hp2, wp2) = to_tensor(&layout, yuv, mult);
                            let mut back = planes_filled(&layout, SENTINEL);
                            to_frame(&t, hp2, wp2, &layout, &mut back);
                            let db = psnr(&image(yuv), &image(&back));
                            assert!(db >= 40.0, "{ctx}: YUV PSNR {db:.1} dB");
                            worst_yuv = worst_yuv.min(db);
                        }
                        let (t, _, _) = to_tensor(&layout, &from_rgb, mult);
                        let db = psnr(&rgb_image(&natural, hp, wp), &rgb_image(&t, hp, wp));
                        assert!(db >= 30.0, "{ctx}: RGB PSNR {db:.1} dB");
                        worst_rgb = worst_rgb.min(db);
                    }
                }
            }
        }
        println!(
            "worst PSNR: YUV -> tensor -> YUV {worst_yuv:.1} dB, RGB -> YUV -> RGB {worst_rgb:.1} dB"
        );
    }

    fn encode_1x1(rgb: [f32; 3], c: YuvColorimetry, format: PixelFormat) -> [u8; 3] {
        let layout = FrameLayout::packed(format, 1, 1).with_colorimetry(c);
        let mut planes = planes_filled(&layout, 0);
        to_frame(&rgb, 1, 1, &layout, &mut planes);
        yuv_at(&layout, &planes, 0, 0)
    }

    #[test]
    fn known_colours() {
        let bt601 = YuvColorimetry::default();
        let bt709 = YuvColorimetry {
            matrix: YuvMatrix::Bt709,
            full_range: false,
        };
        let full601 = YuvColorimetry {
            matrix: YuvMatrix::Bt601,
            full_range: true,
        };
        let cases = [
            ([1.0, 0.0, 0.0], bt601, [82, 90, 240]),
            ([0.0, 1.0, 0.0], bt601, [145, 54, 34]),
            ([0.0, 0.0, 1.0], bt601, [41, 240, 110]),
            ([1.0, 1.0, 1.0], bt601, [235, 128, 128]),
            ([0.0, 0.0, 0.0], bt601, [16, 128, 128]),
            ([1.0, 0.0, 0.0], bt709, [63, 102, 240]),
            ([1.0, 0.0, 0.0], full601, [76, 85, 255]),
            ([1.0, 1.0, 1.0], full601, [255, 128, 128]),
            ([0.0, 0.0, 0.0], full601, [0, 128, 128]),
        ];
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            for (rgb, c, expected) in cases {
                let got = encode_1x1(rgb, c, format);
                for (g, e) in got.into_iter().zip(expected) {
                    assert!(
                        g.abs_diff(e) <= 1,
                        "{format} {rgb:?} {c:?}: {got:?} vs {expected:?}"
                    );
                }
                // And back: within a couple of code values of the colour.
                let layout = FrameLayout::packed(format, 1, 1).with_colorimetry(c);
                let planes: Vec<Vec<u8>> = match format {
                    PixelFormat::I420 => got.iter().map(|&b| vec![b]).collect(),
                    _ => vec![vec![got[0]], vec![got[1], got[2]]],
                };
                let (t, _, _) = to_tensor(&layout, &planes, 1);
                for (g, e) in t.iter().zip(rgb) {
                    assert!((g - e).abs() < 0.015, "{format} {rgb:?} {c:?} back: {t:?}");
                }
            }
        }
        // Packed: bytes land where the format says.
        let layout = FrameLayout::packed(PixelFormat::Xbgr, 1, 1);
        let (t, _, _) = to_tensor(&layout, &[vec![9, 51, 102, 255]], 1);
        assert_eq!(t, [1.0, 0.4, 0.2]);
        let mut dst = vec![vec![7, 0, 0, 0]];
        to_frame(&[-3.0, 0.5, f32::INFINITY], 1, 1, &layout, &mut dst);
        assert_eq!(dst[0], [7, 255, 128, 0]);
    }

    #[test]
    fn errors_not_panics() {
        let layout = FrameLayout::packed(PixelFormat::Rgb, 4, 3);
        let plane = vec![0u8; layout.plane_len(0)];
        assert_eq!(layout.plane_len(0), 36);
        let mut t = vec![0.0; layout.tensor_len(4).unwrap()];
        assert_eq!(t.len(), 3 * 4 * 4);
        assert!(frame_to_tensor(&layout, &[&plane], 4, &mut t).is_ok());

        let err = |r: Result<(usize, usize), FrameError>| r.unwrap_err();
        // Zero size.
        for (w, h) in [(0, 3), (4, 0), (0, 0)] {
            let l = FrameLayout::packed(PixelFormat::Rgb, w, h);
            let e = err(frame_to_tensor(&l, &[&plane], 1, &mut t));
            assert!(matches!(e, FrameError::ZeroSize { .. }), "{e}");
            let e = tensor_to_frame(&t, 4, 4, &l, &mut [&mut plane.clone()]).unwrap_err();
            assert!(matches!(e, FrameError::ZeroSize { .. }), "{e}");
        }
        // Plane count.
        let e = err(frame_to_tensor(&layout, &[], 4, &mut t));
        assert_eq!(e.to_string(), "RGB frames have 1 plane(s), got 0");
        let e = err(frame_to_tensor(&layout, &[&plane, &plane], 4, &mut t));
        assert!(matches!(e, FrameError::PlaneCount { got: 2, .. }), "{e}");
        let i420 = FrameLayout::packed(PixelFormat::I420, 4, 3);
        let e = err(frame_to_tensor(&i420, &[&plane, &plane], 4, &mut t));
        assert!(
            matches!(
                e,
                FrameError::PlaneCount {
                    expected: 3,
                    got: 2,
                    ..
                }
            ),
            "{e}"
        );
        // Plane too short.
        let e = err(frame_to_tensor(&layout, &[&plane[..35]], 4, &mut t));
        assert!(
            e.to_string().contains("expected at least 36 bytes, got 35"),
            "{e}"
        );
        let e = tensor_to_frame(&t, 4, 4, &layout, &mut [&mut plane.clone()[..35]]).unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::PlaneTooShort {
                    expected: 36,
                    got: 35,
                    ..
                }
            ),
            "{e}"
        );
        let i420_planes = [vec![0u8; 12], vec![0u8; 4], vec![0u8; 3]];
        let refs: Vec<&[u8]> = i420_planes.iter().map(Vec::as_slice).collect();
        let e = err(frame_to_tensor(&i420, &refs, 4, &mut t));
        assert!(
            matches!(
                e,
                FrameError::PlaneTooShort {
                    plane: 2,
                    expected: 4,
                    ..
                }
            ),
            "{e}"
        );
        // Stride too small.
        let mut narrow = layout;
        narrow.strides[0] = 11;
        let e = err(frame_to_tensor(&narrow, &[&plane], 4, &mut t));
        assert!(
            e.to_string()
                .contains("stride 11 is smaller than a row of 12 bytes"),
            "{e}"
        );
        // ... but any stride is fine for a single row.
        let mut one_row = FrameLayout::packed(PixelFormat::Rgb, 4, 1);
        one_row.strides[0] = 0;
        let mut t1 = vec![0.0; 12];
        assert!(frame_to_tensor(&one_row, &[&plane[..12]], 1, &mut t1).is_ok());
        // Tensor length.
        for len in [0, 47, 49, 36] {
            let mut t = vec![0.0; len];
            let e = err(frame_to_tensor(&layout, &[&plane], 4, &mut t));
            assert!(
                matches!(e, FrameError::TensorLength { expected: 48, .. }),
                "{e}"
            );
            let e = tensor_to_frame(&t, 4, 4, &layout, &mut [&mut plane.clone()]).unwrap_err();
            assert!(
                e.to_string().contains(&format!("= 48 floats, got {len}")),
                "{e}"
            );
        }
        // Tensor smaller than the frame.
        for (hp, wp) in [(2, 4), (3, 3)] {
            let t = vec![0.0; 3 * hp * wp];
            let e = tensor_to_frame(&t, hp, wp, &layout, &mut [&mut plane.clone()]).unwrap_err();
            assert!(matches!(e, FrameError::TensorTooSmall { .. }), "{e}");
        }
        // Tensor size overflow.
        let e = tensor_to_frame(&t, usize::MAX, 5, &layout, &mut [&mut plane.clone()]).unwrap_err();
        assert!(matches!(e, FrameError::TensorTooLarge { .. }), "{e}");
        // Sizes too large to address.
        for (w, h) in [
            (usize::MAX, 2),
            (usize::MAX / 2, 2),
            (2, usize::MAX),
            (usize::MAX, usize::MAX),
        ] {
            for format in PixelFormat::ALL {
                let l = FrameLayout::packed(format, w, h);
                let planes = vec![&plane[..]; format.n_planes()];
                let e = err(frame_to_tensor(&l, &planes, 8, &mut t));
                assert!(
                    matches!(
                        e,
                        FrameError::TooLarge { .. } | FrameError::PlaneTooShort { .. }
                    ),
                    "{format} {w}x{h}: {e}"
                );
                let mut owned = vec![plane.clone(); format.n_planes()];
                let mut refs: Vec<&mut [u8]> = owned.iter_mut().map(Vec::as_mut_slice).collect();
                assert!(tensor_to_frame(&t, 4, 4, &l, &mut refs).is_err());
                let _ = (l.plane_len(0), l.plane_len(3), l.tensor_len(8));
            }
        }
    }

    /// Random layouts, slices and tensor sizes: every call returns, none panics, and a call that
    /// succeeds wrote a valid frame or tensor.
    #[test]
    fn random_inputs_never_panic() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..3000 {
            let format = PixelFormat::ALL[rng.random_range(0..12)];
            let (w, h) = (rng.random_range(0..6), rng.random_range(0..6));
            let mut layout = FrameLayout::packed(format, w, h);
            for s in &mut layout.strides {
                if rng.random_bool(0.3) {
                    *s = rng.random_range(0..30);
                }
            }
            let n = match rng.random_bool(0.9) {
                true => format.n_planes(),
                false => rng.random_range(0..4),
            };
            let mut planes: Vec<Vec<u8>> = (0..n)
                .map(|p| match rng.random_bool(0.8) {
                    true => vec![1; layout.plane_len(p).min(1000)],
                    false => vec![1; rng.random_range(0..200)],
                })
                .collect();
            let m = rng.random_range(0..9);
            let (hp, wp) = padded_size(h, w, m);
            let len = match rng.random_bool(0.8) {
                true => 3 * hp * wp,
                false => rng.random_range(0..300),
            };
            let mut t = vec![0.5; len];
            let refs: Vec<&[u8]> = planes.iter().map(Vec::as_slice).collect();
            if frame_to_tensor(&layout, &refs, m, &mut t).is_ok() {
                assert!(t.iter().all(|v| (0.0..=1.0).contains(v)));
            }
            let (hp, wp) = match rng.random_bool(0.8) {
                true => (hp, wp),
                false => (rng.random_range(0..10), rng.random_range(0..10)),
            };
            let mut refs: Vec<&mut [u8]> = planes.iter_mut().map(Vec::as_mut_slice).collect();
            let _ = tensor_to_frame(&t, hp, wp, &layout, &mut refs);
        }
    }
}
