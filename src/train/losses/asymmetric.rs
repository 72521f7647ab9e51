//! The asymmetric contrastive term (γ): rain patches must sit tighter together in feature space
//! than image patches. The paper's term is −(S̄_R / S̄_B)^η, with S̄ the mean similarity
//! exp(qᵢ·kⱼ/τ) over pairs i ≠ j within the R̂ (or B̂) features of an anchor group, and η = +1
//! when the sampled B̂ patches have the higher intensity-histogram entropy, −1 otherwise.
//!
//! Computed in log space: log S̄ is a log-sum-exp minus the log of the pair count, and the loss
//! is the log of the paper's ratio, −η·(log S̄_R − log S̄_B). The logarithm is monotonic, so the
//! optimum is the same, while exp(·/τ) at τ = 0.07 spans e^±14 and the plain ratio would
//! overflow or vanish.

use tch::{Kind, Tensor};

/// log of the mean of exp(logits) over the off-diagonal pairs of the block `start..start+len`
/// of every group: `[G]`.
fn log_mean_exp(logits: &Tensor, start: i64, len: i64) -> Tensor {
    let g = logits.size()[0];
    let block = logits.narrow(1, start, len).narrow(2, start, len);
    let own = Tensor::eye(len, (Kind::Bool, logits.device()));
    let pairs = (len * (len - 1)) as f64;
    block
        .masked_fill(&own, f64::NEG_INFINITY)
        .reshape([g, len * len])
        .logsumexp([1i64].as_slice(), false)
        - pairs.ln()
}

/// −mean over groups of η·(log S̄_R − log S̄_B). `logits` is `[G,M,M]` as for
/// [`super::layer_contrastive`] (first `n_b` features B̂); `eta` is `[G]` of ±1.
pub fn asymmetric(logits: &Tensor, n_b: i64, eta: &Tensor) -> Tensor {
    let m = logits.size()[1];
    let log_b = log_mean_exp(logits, 0, n_b);
    let log_r = log_mean_exp(logits, n_b, m - n_b);
    -(eta * (log_r - log_b)).mean(None)
}

/// Shannon entropy (nats) of the histogram of each row of `values` (`[G,N]`, in [0,1]; values
/// outside go to the end bins) over `bins` equal bins: `[G]`.
pub fn histogram_entropy(values: &Tensor, bins: i64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (g, n) = values.size2().expect("values are [G,N]");
    let bin = (values.to_kind(Kind::Float) * bins as f64)
        .floor()
        .clamp(0.0, (bins - 1) as f64)
        .to_kind(Kind::Int64);
    let ones = Tensor::ones([g, n], (Kind::Float, values.device()));
    let counts =
        Tensor::zeros([g, bins], (Kind::Float, values.device())).scatter_add(1, &bin, &ones);
    let p = counts / n as f64;
    // 0·log 0 = 0.
    -(&p * p.clamp_min(1e-30).log()).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
}

/// η per group: +1 where the B̂ patch intensities (`[G,·]`, in [0,1]) have the higher histogram
/// entropy than the R̂ ones, −1 otherwise.
pub fn entropy_sign(clean_values: &Tensor, rain_values: &Tensor, bins: i64) -> Tensor {
    let b = histogram_entropy(clean_values, bins);
    let r = histogram_entropy(rain_values, bins);
    b.gt_tensor(&r).to_kind(Kind::Float) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_plain_loops() {
        let (m, n_b) = (5usize, 2usize);
        let values: Vec<f64> = (0..2 * m * m)
            .map(|i| ((i * 13 % 17) as f64 - 8.0) / 3.0)
            .collect();
        let logits = Tensor::from_slice(&values).view([2, m as i64, m as i64]);
        let eta = Tensor::from_slice(&[1.0f64, -1.0]);
        let got = asymmetric(&logits, n_b as i64, &eta).double_value(&[]);

        let mut want = 0.0;
        for (g, e) in [(0usize, 1.0), (1, -1.0)] {
            let s = |i: usize, j: usize| values[(g * m + i) * m + j];
            let mean_exp = |r: std::ops::Range<usize>| {
                let mut sum = 0.0;
                let mut n = 0.0;
                for i in r.clone() {
                    for j in r.clone() {
                        if i != j {
                            sum += s(i, j).exp();
                            n += 1.0;
                        }
                    }
                }
                sum / n
            };
            let ratio = mean_exp(n_b..m) / mean_exp(0..n_b);
            want += -f64::powf(ratio, e).ln();
        }
        want /= 2.0;
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }

    #[test]
    fn entropy_by_hand() {
        // Bins of 0.1, 0.1, 0.6, 0.9 over 4 bins: 0, 0, 2, 3 → p = ½, ¼, ¼.
        let v = Tensor::from_slice(&[0.1f32, 0.1, 0.6, 0.9, 0.3, 0.3, 0.3, 0.3]).view([2, 4]);
        let h = histogram_entropy(&v, 4);
        let want = -(0.5f64 * 0.5f64.ln() + 0.5 * 0.25f64.ln());
        assert!((h.double_value(&[0]) - want).abs() < 1e-6);
        assert_eq!(h.double_value(&[1]), 0.0);
        // Textured clean patches against flat rain: η = +1; and the other way round: −1.
        let eta = entropy_sign(&v.narrow(0, 0, 1), &v.narrow(0, 1, 1), 4);
        assert_eq!(eta.double_value(&[0]), 1.0);
        let eta = entropy_sign(&v.narrow(0, 1, 1), &v.narrow(0, 0, 1), 4);
        assert_eq!(eta.double_value(&[0]), -1.0);
    }
}
