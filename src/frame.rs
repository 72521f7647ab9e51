//! Raw video frames ⇄ the float tensor an image-to-image network eats (DESIGN.md §3–4).
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
    let (w, h) = (layout.width, layout.height);
    if hp < h || wp < w {
        return Err(FrameError::TensorTooSmall {
            hp,
            wp,
            width: w,
            height: h,
        });
    }
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
            let chroma = u.zip(v).map(|(u, v)| u.iter_mut().zip(v.iter_mut()));
            yuv_from_tensor(&k, dims, [r, g, b], rows_mut(y, s0, w, h), chroma);
        }
        (PixelFormat::Nv12, [y, uv]) => {
            let k = YuvEncode::new(layout.colorimetry);
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let chroma = rows_mut(uv, s1, 2 * cw, ch)
                .map(|row| row.as_chunks_mut::<2>().0.iter_mut().map(|[u, v]| (u, v)));
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
fn clamp01(v: f32) -> f32 {
    // `max` first so that NaN becomes 0.
    v.max(0.0).min(1.0)
}

#[inline(always)]
fn to_u8(v: f32) -> u8 {
    (clamp01(v) * 255.0 + 0.5) as u8
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
    for y in 0..d.h {
        let (px, _) = dst[y * stride..][..d.w * N].as_chunks_mut::<N>();
        let row = y * d.wp;
        let (r, g, b) = (&r[row..][..d.w], &g[row..][..d.w], &b[row..][..d.w]);
        for (((p, &r), &g), &b) in px.iter_mut().zip(r).zip(g).zip(b) {
            p[R] = to_u8(r);
            p[G] = to_u8(g);
            p[B] = to_u8(b);
        }
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
struct YuvDecode {
    y: [f32; 256],
    rv: [f32; 256],
    gu: [f32; 256],
    gv: [f32; 256],
    bu: [f32; 256],
}

impl YuvDecode {
    fn new(c: YuvColorimetry) -> YuvDecode {
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

    /// Clamps one pixel, adds it to `acc` and returns its Y byte.
    #[inline(always)]
    fn luma(&self, r: f32, g: f32, b: f32, acc: &mut [f32; 3]) -> u8 {
        let (r, g, b) = (clamp01(r), clamp01(g), clamp01(b));
        acc[0] += r;
        acc[1] += g;
        acc[2] += b;
        (self.y0 + self.y[0] * r + self.y[1] * g + self.y[2] * b) as u8
    }

    /// U and V bytes of the mean colour `scale * sum`.
    #[inline(always)]
    fn chroma(&self, sum: [f32; 3], scale: f32) -> (u8, u8) {
        let [r, g, b] = sum.map(|v| v * scale);
        let u = self.c0 + self.u[0] * r + self.u[1] * g + self.u[2] * b;
        let v = self.c0 + self.v[0] * r + self.v[1] * g + self.v[2] * b;
        (u as u8, v as u8)
    }
}

/// Writes a whole frame from the tensor planes: `luma` yields the Y rows, `chroma` the chroma
/// rows as iterators of (U, V) byte pairs.
fn yuv_from_tensor<'a, I>(
    k: &YuvEncode,
    d: Dims,
    [r, g, b]: [&[f32]; 3],
    mut luma: impl Iterator<Item = &'a mut [u8]>,
    chroma: impl Iterator<Item = I>,
) where
    I: Iterator<Item = (&'a mut u8, &'a mut u8)>,
{
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

/// Two image rows sharing one chroma row.
#[inline(always)]
fn yuv_rows_from_tensor<'a>(
    k: &YuvEncode,
    [r0, g0, b0]: [&[f32]; 3],
    [r1, g1, b1]: [&[f32]; 3],
    y0: &mut [u8],
    y1: &mut [u8],
    mut uv: impl Iterator<Item = (&'a mut u8, &'a mut u8)>,
) {
    let (y0p, y0t) = y0.as_chunks_mut::<2>();
    let (y1p, y1t) = y1.as_chunks_mut::<2>();
    let n = y0p.len();
    let y1p = &mut y1p[..n];
    let [
        (r0p, r0t),
        (g0p, g0t),
        (b0p, b0t),
        (r1p, r1t),
        (g1p, g1t),
        (b1p, b1t),
    ] = [r0, g0, b0, r1, g1, b1].map(|s| s.as_chunks::<2>());
    let [r0p, g0p, b0p, r1p, g1p, b1p] = [r0p, g0p, b0p, r1p, g1p, b1p].map(|s| &s[..n]);
    // The index range first: the zip stops before taking a chroma pair that the tail needs.
    for (i, (u, v)) in (0..n).zip(&mut uv) {
        let mut acc = [0.0; 3];
        for j in 0..2 {
            y0p[i][j] = k.luma(r0p[i][j], g0p[i][j], b0p[i][j], &mut acc);
            y1p[i][j] = k.luma(r1p[i][j], g1p[i][j], b1p[i][j], &mut acc);
        }
        (*u, *v) = k.chroma(acc, 0.25);
    }
    if let ([y0], [y1], [r0], [g0], [b0], [r1], [g1], [b1]) =
        (y0t, y1t, r0t, g0t, b0t, r1t, g1t, b1t)
    {
        let mut acc = [0.0; 3];
        *y0 = k.luma(*r0, *g0, *b0, &mut acc);
        *y1 = k.luma(*r1, *g1, *b1, &mut acc);
        if let Some((u, v)) = uv.next() {
            (*u, *v) = k.chroma(acc, 0.5);
        }
    }
}
