//! Running a generator on still images: the element's own frame path (`Derainer`: the same
//! conversion and padding, on packed RGB), so `derain eval`, the demo and the detection evaluation
//! score exactly what the element would output.

use image::RgbImage;

use derain_core::derainer::{DerainError, Derainer};
use derain_core::frame::{FrameError, FrameLayout, PixelFormat};
use derain_core::runtime::{Generator, RuntimeError};

/// Errors from deraining a still image.
#[derive(Debug, thiserror::Error)]
pub enum StillError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The image is larger than a derainer takes, or its tensor cannot be allocated.
    #[error("{0}")]
    Size(String),
}

impl From<DerainError> for StillError {
    fn from(e: DerainError) -> Self {
        match e {
            DerainError::Frame(e) => StillError::Frame(e),
            DerainError::Run(e) => StillError::Runtime(e),
            other => StillError::Size(other.to_string()),
        }
    }
}

/// Derains one RGB image with `generator` and returns the output at the input's size.
pub fn derain_image(generator: &mut Generator, input: &RgbImage) -> Result<RgbImage, StillError> {
    let (w, h) = (input.width() as usize, input.height() as usize);
    let layout = FrameLayout::packed(PixelFormat::Rgb, w, h);
    // No size limit beyond what memory allows: a still is not a camera's stream.
    let mut derainer = Derainer::new(generator).with_max_pixels(usize::MAX);
    derainer.configure(layout)?;
    let mut out = vec![0u8; w * h * 3];
    derainer.process(
        layout.strides,
        &[input.as_raw()],
        layout.strides,
        &mut [&mut out[..]],
    )?;
    // The buffer was sized from the same w and h, so this cannot fail; keep it an error anyway.
    let (hp, wp) = derainer.padded();
    RgbImage::from_raw(input.width(), input.height(), out).ok_or(StillError::Frame(
        FrameError::TensorTooSmall {
            hp,
            wp,
            width: w,
            height: h,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::fixtures;
    use derain_core::model::Model;
    use derain_core::runtime::SessionOptions;

    #[test]
    fn affine_model_on_an_odd_sized_image() {
        let model = Model::from_bytes(fixtures::affine([0.5; 3], [0.25; 3]), "affine").unwrap();
        let Ok(mut g) = Generator::new(&model, &SessionOptions::default()) else {
            eprintln!("skipped: ONNX Runtime not loadable (run `make setup`)");
            return;
        };
        let img = RgbImage::from_fn(13, 7, |x, y| {
            image::Rgb([(x * 19) as u8, (y * 30) as u8, 200])
        });
        let out = derain_image(&mut g, &img).unwrap();
        assert_eq!(out.dimensions(), (13, 7));
        for (a, b) in img.pixels().zip(out.pixels()) {
            for c in 0..3 {
                let want = (0.5 * f32::from(a.0[c]) / 255.0 + 0.25) * 255.0;
                assert!((f32::from(b.0[c]) - want).abs() <= 0.51, "{a:?} -> {b:?}");
            }
        }
    }

    #[test]
    fn padded_model_keeps_the_size() {
        let model = Model::from_bytes(fixtures::identity(8), "identity8").unwrap();
        let Ok(mut g) = Generator::new(&model, &SessionOptions::default()) else {
            eprintln!("skipped: ONNX Runtime not loadable (run `make setup`)");
            return;
        };
        let img = RgbImage::from_fn(21, 11, |x, y| image::Rgb([x as u8, y as u8, 7]));
        assert_eq!(derain_image(&mut g, &img).unwrap(), img);
    }
}
