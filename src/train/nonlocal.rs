//! Non-local sampling (docs/ARCHITECTURE.md, Training (ANLCL)): for many anchor patches per image,
//! find the most similar (block matching: squared L2 in image space) and the least similar
//! ("reverse non-local") patches within a search window, on the training device, for a whole batch
//! at once.
//!
//! All anchors are searched together: ‖a − b‖² = ‖a‖² + ‖b‖² − 2a·b, where the cross term
//! a·b against every candidate of an anchor's window is one grouped convolution (the anchor
//! patch as the kernel of its own group, its window as that group's input) — the batched matrix
//! product of each anchor with the unfolded patches of its window, without materialising the
//! unfolded `[A, (2w+1)², C·P²]` tensor — and ‖b‖² is a box sum of the squared window. Candidates
//! that leave the image are masked, so anchors may sit anywhere, borders included.
//!
//! Ties are broken deterministically by candidate order (row-major over the window offsets,
//! from (−w, −w)): a stable sort, nearest first or farthest first.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// What the sampler cannot do with the images and settings given.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("images of {height}×{width} are smaller than the {patch}×{patch} patches compared")]
    TooSmall { height: i64, width: i64, patch: i64 },
    #[error(
        "asked for {k} patches per anchor, but a ±{window} pixel window in a {height}×{width} \
         image holds only {available} {patch}×{patch} patches next to a corner; lower the count \
         or use larger crops"
    )]
    TooFew {
        k: i64,
        available: i64,
        window: i64,
        patch: i64,
        height: i64,
        width: i64,
    },
}

/// Anchor patches: image index and top-left corner, each `i64 [A]`.
#[derive(Debug)]
pub struct Anchors {
    pub batch: Tensor,
    pub y: Tensor,
    pub x: Tensor,
}

impl Anchors {
    /// `per_image` anchors in each of `batch` images of `height`×`width`, top-left corners
    /// uniform over every position where a `patch`-sized patch fits; anchors of image 0 first.
    pub fn sample(
        rng: &mut ChaCha8Rng,
        batch: i64,
        (height, width): (i64, i64),
        patch: i64,
        per_image: i64,
        device: Device,
    ) -> Self {
        let n = (batch * per_image) as usize;
        let (mut b, mut y, mut x) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::new());
        for i in 0..batch {
            for _ in 0..per_image {
                b.push(i);
                y.push(rng.random_range(0..=height - patch));
                x.push(rng.random_range(0..=width - patch));
            }
        }
        Self::from_positions(&b, &y, &x, device)
    }

    /// Anchors at the given image indices and top-left corners.
    pub fn from_positions(batch: &[i64], y: &[i64], x: &[i64], device: Device) -> Self {
        Self {
            batch: Tensor::from_slice(batch).to_device(device),
            y: Tensor::from_slice(y).to_device(device),
            x: Tensor::from_slice(x).to_device(device),
        }
    }

    /// Number of anchors.
    pub fn len(&self) -> i64 {
        self.batch.size()[0]
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Patches found for each anchor, in the anchor's image: top-left corners, `i64 [A, k]`, best
/// first.
#[derive(Debug)]
pub struct Neighbours {
    pub y: Tensor,
    pub x: Tensor,
}

/// Block matching of `patch`×`patch` patches within ±`window` pixels of each anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMatcher {
    pub patch: i64,
    pub window: i64,
}

impl BlockMatcher {
    /// Candidates per anchor (valid or not): the window's (2w+1)² offsets.
    pub fn window_len(&self) -> i64 {
        (2 * self.window + 1).pow(2)
    }

    /// The fewest valid candidates any anchor of a `height`×`width` image has (one in a corner).
    pub fn min_candidates(&self, height: i64, width: i64) -> i64 {
        let side = |n: i64| self.window.min(n - self.patch) + 1;
        side(height) * side(width)
    }

    /// Squared L2 distances from each anchor's patch in `images` (`[B,C,H,W]`) to every
    /// candidate of its window, `[A, (2w+1)²]` (row-major over offsets from (−w, −w)), and which
    /// candidates lie inside the image (`bool [A, (2w+1)²]`). No gradient flows.
    pub fn distances(&self, images: &Tensor, anchors: &Anchors) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        let (_, c, h, w) = images.size4().expect("images are [B,C,H,W]");
        let (p, win) = (self.patch, self.window);
        let (a, r, side) = (anchors.len(), p + 2 * win, 2 * win + 1);
        let (kind, device) = (images.kind(), images.device());

        // Each anchor's window, [A, C, R, R]; zero padding stands in for outside the image.
        let padded = images.detach().constant_pad_nd([win, win, win, win]);
        let span = Tensor::arange(r, (Kind::Int64, device));
        let rows = (anchors.y.unsqueeze(1) + &span).view([a, r, 1]);
        let cols = (anchors.x.unsqueeze(1) + &span).view([a, 1, r]);
        let regions = padded
            .permute([0, 2, 3, 1])
            .index(&[Some(anchors.batch.view([a, 1, 1])), Some(rows), Some(cols)])
            .permute([0, 3, 1, 2])
            .contiguous();
        let anchor_patches = regions.narrow(2, win, p).narrow(3, win, p).contiguous();

        let cross = regions.reshape([1, a * c, r, r]).conv2d(
            &anchor_patches,
            None::<&Tensor>,
            [1, 1],
            [0, 0],
            [1, 1],
            a,
        );
        let ones = Tensor::ones([1, 1, p, p], (kind, device));
        let cand_sq = regions
            .square()
            .sum_dim_intlist([1i64].as_slice(), true, kind)
            .conv2d(&ones, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1);
        let anchor_sq =
            anchor_patches
                .square()
                .sum_dim_intlist([1i64, 2, 3].as_slice(), false, kind);
        let d = anchor_sq.view([a, 1]) + cand_sq.view([a, side * side])
            - cross.view([a, side * side]) * 2.0;

        let offsets = Tensor::arange(side, (Kind::Int64, device)) - win;
        let inside = |pos: &Tensor, n: i64| {
            let q = pos.unsqueeze(1) + &offsets;
            q.ge(0).logical_and(&q.le(n - p))
        };
        let valid = inside(&anchors.y, h)
            .unsqueeze(2)
            .logical_and(&inside(&anchors.x, w).unsqueeze(1))
            .view([a, side * side]);
        (d.clamp_min(0.0), valid)
    }

    /// The `k` patches nearest to each anchor (the anchor itself, at distance 0, among them).
    pub fn nearest(
        &self,
        images: &Tensor,
        anchors: &Anchors,
        k: i64,
    ) -> Result<Neighbours, SamplerError> {
        self.select(images, anchors, k, false)
    }

    /// The `k` patches farthest from each anchor ("reverse non-local" negatives).
    pub fn farthest(
        &self,
        images: &Tensor,
        anchors: &Anchors,
        k: i64,
    ) -> Result<Neighbours, SamplerError> {
        self.select(images, anchors, k, true)
    }

    /// Checks that `k` candidates exist for every anchor of a `height`×`width` image.
    pub fn check(&self, height: i64, width: i64, k: i64) -> Result<(), SamplerError> {
        if height < self.patch || width < self.patch {
            return Err(SamplerError::TooSmall {
                height,
                width,
                patch: self.patch,
            });
        }
        let available = self.min_candidates(height, width);
        if k > available {
            return Err(SamplerError::TooFew {
                k,
                available,
                window: self.window,
                patch: self.patch,
                height,
                width,
            });
        }
        Ok(())
    }

    fn select(
        &self,
        images: &Tensor,
        anchors: &Anchors,
        k: i64,
        farthest: bool,
    ) -> Result<Neighbours, SamplerError> {
        let (_, _, h, w) = images.size4().expect("images are [B,C,H,W]");
        self.check(h, w, k)?;
        let _guard = tch::no_grad_guard();
        let (d, valid) = self.distances(images, anchors);
        // Invalid candidates sort last either way (real distances are ≥ 0).
        let key = d.masked_fill(
            &valid.logical_not(),
            if farthest { -1.0 } else { f64::INFINITY },
        );
        let (_, order) = key.sort_stable(true, 1, farthest);
        let idx = order.narrow(1, 0, k);
        let side = 2 * self.window + 1;
        let dy = idx.floor_divide_scalar(side) - self.window;
        let dx = idx.remainder(side) - self.window;
        Ok(Neighbours {
            y: anchors.y.unsqueeze(1) + dy,
            x: anchors.x.unsqueeze(1) + dx,
        })
    }
}

/// The feature-map cell of image position (`y`, `x`) in a `hf`×`wf` map of an `h`×`w` image.
pub fn feature_cell(
    y: &Tensor,
    x: &Tensor,
    (hf, wf): (i64, i64),
    (h, w): (i64, i64),
) -> (Tensor, Tensor) {
    (
        (y * hf).floor_divide_scalar(h).clamp(0, hf - 1),
        (x * wf).floor_divide_scalar(w).clamp(0, wf - 1),
    )
}

/// Feature vectors of `features` (`[B,C,Hf,Wf]`, from an `h`×`w` image) at image positions
/// (`y`, `x`) of images `batch` (all broadcast together): shape `[..., C]`. Gradients flow to
/// `features`.
pub fn features_at(
    features: &Tensor,
    batch: &Tensor,
    y: &Tensor,
    x: &Tensor,
    image: (i64, i64),
) -> Tensor {
    let (_, _, hf, wf) = features.size4().expect("features are [B,C,H,W]");
    let (fy, fx) = feature_cell(y, x, (hf, wf), image);
    features
        .permute([0, 2, 3, 1])
        .index(&[Some(batch), Some(&fy), Some(&fx)])
}

/// The values of `patch`×`patch` patches of `plane` (`[B,H,W]`) with top-left corners (`y`,
/// `x`) (`[A,k]`) in images `batch` (`[A]`): `[A, k·patch²]`.
pub fn patch_pixels(plane: &Tensor, batch: &Tensor, y: &Tensor, x: &Tensor, patch: i64) -> Tensor {
    let (a, k) = y.size2().expect("positions are [A,k]");
    let span = Tensor::arange(patch, (Kind::Int64, plane.device()));
    let rows = y.view([a, k, 1, 1]) + span.view([1, 1, patch, 1]);
    let cols = x.view([a, k, 1, 1]) + span.view([1, 1, 1, patch]);
    plane
        .index(&[Some(batch.view([a, 1, 1, 1])), Some(rows), Some(cols)])
        .reshape([a, k * patch * patch])
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// Images whose values are multiples of 1/4, so every distance is exact in f32 and ties are
    /// real ties; image 0 has a flat block where many distances are exactly 0.
    fn images(b: usize, h: usize, w: usize) -> (Vec<f32>, Tensor) {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut v: Vec<f32> = (0..b * 3 * h * w)
            .map(|_| rng.random_range(0..=8) as f32 / 4.0)
            .collect();
        for c in 0..3 {
            for y in 0..20 {
                for x in 0..24 {
                    v[(c * h + y) * w + x] = 0.5;
                }
            }
        }
        let t = Tensor::from_slice(&v).view([b as i64, 3, h as i64, w as i64]);
        (v, t)
    }

    /// Plain loops: every candidate of the window, sorted by (distance, candidate order).
    #[allow(clippy::too_many_arguments)]
    fn brute_force(
        v: &[f32],
        (h, w): (i64, i64),
        (bi, ay, ax): (i64, i64, i64),
        p: i64,
        win: i64,
        k: usize,
        farthest: bool,
    ) -> Vec<(i64, i64)> {
        let at = |c: i64, y: i64, x: i64| v[(((bi * 3 + c) * h + y) * w + x) as usize] as f64;
        let mut cands = Vec::new();
        let mut order = 0;
        for dy in -win..=win {
            for dx in -win..=win {
                let (y, x) = (ay + dy, ax + dx);
                if y >= 0 && x >= 0 && y + p <= h && x + p <= w {
                    let mut d = 0.0;
                    for c in 0..3 {
                        for i in 0..p {
                            for j in 0..p {
                                d += (at(c, ay + i, ax + j) - at(c, y + i, x + j)).powi(2);
                            }
                        }
                    }
                    cands.push((if farthest { -d } else { d }, order, (y, x)));
                }
                order += 1;
            }
        }
        cands.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        cands.into_iter().take(k).map(|c| c.2).collect()
    }

    #[test]
    fn block_matching_equals_brute_force() {
        let (h, w) = (40i64, 44i64);
        let (v, t) = images(2, h as usize, w as usize);
        let m = BlockMatcher {
            patch: 8,
            window: 5,
        };
        // Corners, borders, the interior, and the flat block (many exact ties).
        let pos = [
            (0, 0, 0),
            (0, 32, 36),
            (1, 0, 36),
            (1, 32, 0),
            (0, 3, 4),
            (0, 10, 12),
            (1, 17, 21),
            (1, 30, 2),
        ];
        let anchors = Anchors::from_positions(
            &pos.map(|p| p.0),
            &pos.map(|p| p.1),
            &pos.map(|p| p.2),
            Device::Cpu,
        );
        let k = m.min_candidates(h, w);
        assert_eq!(k, 36);
        for farthest in [false, true] {
            let n = if farthest {
                m.farthest(&t, &anchors, k).unwrap()
            } else {
                m.nearest(&t, &anchors, k).unwrap()
            };
            assert_eq!(n.y.size(), [pos.len() as i64, k]);
            for (i, &anchor) in pos.iter().enumerate() {
                let want = brute_force(&v, (h, w), anchor, 8, 5, k as usize, farthest);
                let got: Vec<(i64, i64)> = (0..k)
                    .map(|j| {
                        (
                            n.y.int64_value(&[i as i64, j]),
                            n.x.int64_value(&[i as i64, j]),
                        )
                    })
                    .collect();
                assert_eq!(got, want, "anchor {anchor:?}, farthest {farthest}");
            }
        }
        // Away from the flat block (image 1), the anchor is its own nearest patch.
        let n = m.nearest(&t, &anchors, 1).unwrap();
        for (i, &(b, y, x)) in pos.iter().enumerate().filter(|(_, p)| p.0 == 1) {
            let got = (
                n.y.int64_value(&[i as i64, 0]),
                n.x.int64_value(&[i as i64, 0]),
            );
            assert_eq!(got, (y, x), "anchor {:?}", (b, y, x));
        }
    }

    #[test]
    fn too_many_candidates_is_an_error() {
        let (_, t) = images(1, 40, 44);
        let m = BlockMatcher {
            patch: 8,
            window: 5,
        };
        let anchors = Anchors::from_positions(&[0], &[5], &[5], Device::Cpu);
        let err = m.nearest(&t, &anchors, 37).unwrap_err();
        assert!(err.to_string().contains("only 36"), "{err}");
        let err = m.nearest(&t.narrow(2, 0, 6), &anchors, 1).unwrap_err();
        assert!(matches!(err, SamplerError::TooSmall { .. }), "{err}");
    }

    #[test]
    fn anchors_are_seeded_and_inside() {
        let a = Anchors::sample(
            &mut ChaCha8Rng::seed_from_u64(1),
            3,
            (20, 30),
            16,
            50,
            Device::Cpu,
        );
        let b = Anchors::sample(
            &mut ChaCha8Rng::seed_from_u64(1),
            3,
            (20, 30),
            16,
            50,
            Device::Cpu,
        );
        assert!(a.y.equal(&b.y) && a.x.equal(&b.x));
        assert_eq!(a.len(), 150);
        assert_eq!(a.batch.int64_value(&[149]), 2);
        assert!(a.y.max().int64_value(&[]) <= 4 && a.x.max().int64_value(&[]) <= 14);
        assert!(a.y.min().int64_value(&[]) >= 0);
    }

    #[test]
    fn features_and_pixels_are_gathered_at_positions() {
        let f = Tensor::arange(2 * 2 * 4 * 4, (Kind::Float, Device::Cpu)).view([2, 2, 4, 4]);
        // Image 16×16 → 4×4 map: position (9, 14) is cell (2, 3).
        let b = Tensor::from_slice(&[1i64]);
        let got = features_at(
            &f,
            &b,
            &Tensor::from_slice(&[9i64]),
            &Tensor::from_slice(&[14i64]),
            (16, 16),
        );
        assert_eq!(got.size(), [1, 2]);
        assert_eq!(got.double_value(&[0, 0]), (32 + 2 * 4 + 3) as f64);
        assert_eq!(got.double_value(&[0, 1]), (48 + 2 * 4 + 3) as f64);

        let plane = Tensor::arange(2 * 5 * 6, (Kind::Float, Device::Cpu)).view([2, 5, 6]);
        let px = patch_pixels(
            &plane,
            &Tensor::from_slice(&[1i64]),
            &Tensor::from_slice(&[1i64, 3]).view([1, 2]),
            &Tensor::from_slice(&[2i64, 4]).view([1, 2]),
            2,
        );
        let want = [38.0, 39.0, 44.0, 45.0, 52.0, 53.0, 58.0, 59.0];
        assert_eq!(
            Vec::<f64>::try_from(px.view([-1]).to_kind(Kind::Double)).unwrap(),
            want
        );
    }
}
