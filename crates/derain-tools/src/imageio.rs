//! Reading and writing still images: the common currency of footage, synthesis, metrics and
//! evaluation is `image::RgbImage` (8-bit sRGB, tightly packed).

use std::io::Write;
use std::path::{Path, PathBuf};

use derain_core::rainscore::Binned;
pub use image::RgbImage;

/// An 8-bit RGB image 2×2-binned for the rain score and the rain detector
/// ([`derain_core::rainscore::Binned`]; derain-core reads no image files, so the conversion from
/// `RgbImage` lives here).
pub fn binned(img: &RgbImage) -> Binned {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    Binned::from_fn(w, h, |x, y| {
        let i = 3 * (y * w + x);
        [
            f32::from(raw[i]) / 255.0,
            f32::from(raw[i + 1]) / 255.0,
            f32::from(raw[i + 2]) / 255.0,
        ]
    })
}

/// File extensions treated as still images in folders (lower case).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp"];

/// Errors from reading or writing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageIoError {
    #[error("cannot read image {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("cannot write image {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode image {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("cannot list folder {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// True when the path's extension names a still-image format we read.
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Loads any supported image file as 8-bit RGB (grey and alpha are converted).
pub fn load_rgb(path: &Path) -> Result<RgbImage, ImageIoError> {
    let img = image::ImageReader::open(path)
        .map_err(|e| ImageIoError::Read {
            path: path.to_owned(),
            source: image::ImageError::IoError(e),
        })?
        .with_guessed_format()
        .map_err(|e| ImageIoError::Read {
            path: path.to_owned(),
            source: image::ImageError::IoError(e),
        })?
        .decode()
        .map_err(|source| ImageIoError::Read {
            path: path.to_owned(),
            source,
        })?;
    Ok(img.into_rgb8())
}

/// Lists the image files directly inside `dir`, sorted by file name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, ImageIoError> {
    let list_err = |source| ImageIoError::List {
        path: dir.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_err)? {
        let path = entry.map_err(list_err)?.path();
        if path.is_file() && is_image_path(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Writes a PNG through a temporary file in the same folder and a rename, so a reader (or an
/// interrupted run) never sees half a file.
pub fn save_png_atomic(img: &RgbImage, path: &Path) -> Result<(), ImageIoError> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|source| ImageIoError::Encode {
        path: path.to_owned(),
        source,
    })?;
    write_file_atomic(path, &bytes).map_err(|source| ImageIoError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Writes bytes through a temporary file, fsync and rename; the file ends up mode 0644.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Places images side by side (left to right), top-aligned, on a black canvas.
pub fn hstack(images: &[&RgbImage]) -> RgbImage {
    let width = images.iter().map(|i| i.width()).sum();
    let height = images.iter().map(|i| i.height()).max().unwrap_or(0);
    let mut out = RgbImage::new(width, height);
    let mut x0 = 0i64;
    for img in images {
        image::imageops::replace(&mut out, *img, x0, 0);
        x0 += i64::from(img.width());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = RgbImage::new(5, 3);
        img.put_pixel(4, 2, image::Rgb([10, 200, 30]));
        let p = dir.path().join("b.png");
        save_png_atomic(&img, &p).unwrap();
        std::fs::write(dir.path().join("a.txt"), b"x").unwrap();
        save_png_atomic(&img, &dir.path().join("a.PNG")).unwrap();
        let listed = list_images(dir.path()).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[0].ends_with("a.PNG"));
        assert_eq!(load_rgb(&p).unwrap(), img);
    }

    #[test]
    fn corrupt_image_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.png");
        std::fs::write(&p, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let err = load_rgb(&p).unwrap_err().to_string();
        assert!(err.contains("bad.png"), "{err}");
    }

    #[test]
    fn hstack_places_side_by_side() {
        let a = RgbImage::from_pixel(2, 2, image::Rgb([1, 1, 1]));
        let b = RgbImage::from_pixel(3, 1, image::Rgb([2, 2, 2]));
        let s = hstack(&[&a, &b]);
        assert_eq!(s.dimensions(), (5, 2));
        assert_eq!(s.get_pixel(1, 1).0, [1, 1, 1]);
        assert_eq!(s.get_pixel(2, 0).0, [2, 2, 2]);
        assert_eq!(s.get_pixel(2, 1).0, [0, 0, 0]);
    }
}
