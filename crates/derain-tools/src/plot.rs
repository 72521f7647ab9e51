//! Line charts of training curves as PNG, drawn by hand on an `RgbImage` with the detector's
//! embedded bitmap font. A plotting crate would need system fonts (font-kit) or a bundled TTF
//! to label anything; the charts here need only lines, a log axis and a legend.

use image::RgbImage;

use derain_core::detect::draw::{Canvas, class_colour, text_size};

/// One named curve: (x, y) points, drawn in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const W: u32 = 960;
const H: u32 = 540;
const LEFT: i64 = 70;
const RIGHT: i64 = 200;
const TOP: i64 = 30;
const BOTTOM: i64 = 40;
const BG: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [40, 40, 40];
const GRID: [u8; 3] = [225, 225, 225];

/// Draws the series on a log10 y axis (non-positive and non-finite values are left out), with
/// `title` on top and a legend on the right.
pub fn log_chart(title: &str, x_label: &str, series: &[Series]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, image::Rgb(BG));
    let (w, h) = (W as usize, H as usize);
    let mut c = Canvas {
        data: img.as_mut(),
        width: w,
        height: h,
        stride: w * 3,
        pixel_stride: 3,
        rgb_offsets: [0, 1, 2],
    };
    let usable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && y > 0.0;
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter().filter(|p| usable(p)));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y.log10());
        y1 = y1.max(y.log10());
    }
    c.text(LEFT, 8, title, 2, INK);
    if x0 > x1 {
        c.text(LEFT, TOP + 20, "no data yet", 2, INK);
        return img;
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    // Whole decades, at least one.
    let (d0, mut d1) = (y0.floor(), y1.ceil());
    if d1 - d0 < 1.0 {
        d1 = d0 + 1.0;
    }
    let (px0, px1) = (LEFT, W as i64 - RIGHT);
    let (py0, py1) = (H as i64 - BOTTOM, TOP);
    let to_px = |x: f64, ly: f64| -> (i64, i64) {
        let fx = (x - x0) / (x1 - x0);
        let fy = (ly - d0) / (d1 - d0);
        (
            px0 + (fx * (px1 - px0) as f64).round() as i64,
            py0 + (fy * (py1 - py0) as f64).round() as i64,
        )
    };
    // Grid and labels: one line per decade, x ticks at fifths.
    let mut d = d0;
    while d <= d1 + 1e-9 {
        let (_, y) = to_px(x0, d);
        c.fill_rect(px0, y, px1, y + 1, GRID);
        c.text(4, y - 4, &format!("1e{d:.0}"), 1, INK);
        d += 1.0;
    }
    for i in 0..=5 {
        let x = x0 + (x1 - x0) * f64::from(i) / 5.0;
        let (px, _) = to_px(x, d0);
        c.fill_rect(px, py1, px + 1, py0, GRID);
        let label = format!("{x:.0}");
        let (tw, _) = text_size(&label, 1);
        c.text(px - tw as i64 / 2, py0 + 6, &label, 1, INK);
    }
    c.fill_rect(px0, py1, px0 + 1, py0 + 1, INK);
    c.fill_rect(px0, py0, px1 + 1, py0 + 1, INK);
    let (tw, _) = text_size(x_label, 1);
    c.text((px0 + px1) / 2 - tw as i64 / 2, py0 + 22, x_label, 1, INK);

    for (i, s) in series.iter().enumerate() {
        let colour = class_colour(i);
        let mut last: Option<(i64, i64)> = None;
        for &(x, y) in s.points.iter().filter(|p| usable(p)) {
            let p = to_px(x, y.log10());
            match last {
                Some(q) => line(&mut c, q, p, colour),
                None => c.fill_rect(p.0, p.1, p.0 + 2, p.1 + 2, colour),
            }
            last = Some(p);
        }
        let ly = TOP + 10 + 18 * i as i64;
        c.fill_rect(px1 + 12, ly, px1 + 28, ly + 8, colour);
        c.text(px1 + 34, ly, &s.name, 1, INK);
    }
    img
}

/// A 2-pixel line by stepping along the longer axis.
fn line(c: &mut Canvas, (ax, ay): (i64, i64), (bx, by): (i64, i64), colour: [u8; 3]) {
    let n = (bx - ax).abs().max((by - ay).abs()).max(1);
    for i in 0..=n {
        let x = ax + (bx - ax) * i / n;
        let y = ay + (by - ay) * i / n;
        c.fill_rect(x, y, x + 2, y + 2, colour);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_land_where_their_values_say() {
        let s = Series {
            name: "total".into(),
            points: (0..=100)
                .map(|i| (f64::from(i), 10f64.powf(-f64::from(i) / 50.0)))
                .collect(),
        };
        let img = log_chart("losses", "step", &[s]);
        assert_eq!(img.dimensions(), (W, H));
        let colour = class_colour(0);
        // y from 1 (top decade) down to 0.01 (bottom): the first point sits at the top-left of
        // the plot area, the last at the bottom-right.
        let at = |x: i64, y: i64| img.get_pixel(x as u32, y as u32).0;
        assert_eq!(at(LEFT, TOP), colour);
        assert_eq!(at(W as i64 - RIGHT, H as i64 - BOTTOM), colour);
        // Nothing drawn in the empty lower-left corner above the axis.
        assert_ne!(at(LEFT + 20, H as i64 - BOTTOM - 20), colour);
    }

    #[test]
    fn empty_and_unusable_data_do_not_panic() {
        let bad = Series {
            name: "nan".into(),
            points: vec![(0.0, f64::NAN), (1.0, -1.0), (2.0, 0.0)],
        };
        let img = log_chart("x", "step", &[bad]);
        assert_eq!(img.dimensions(), (W, H));
        let one = Series {
            name: "one".into(),
            points: vec![(5.0, 3.0)],
        };
        log_chart("x", "step", &[one]);
    }
}
