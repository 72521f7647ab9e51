//! The layer contrastive term (μ): patches of B̂ are positives of each other, patches of R̂
//! negatives to them, and symmetrically for R̂. The authors' code implements the printed formula
//! as a supervised-contrastive (SupCon, Khosla et al.) log-softmax over all B̂ and R̂ features,
//! every feature an anchor; so does this:
//!
//! L = −1/M Σᵢ 1/|P(i)| Σ_{p∈P(i)} log( exp(sᵢₚ) / Σ_{a≠i} exp(sᵢₐ) )
//!
//! with sᵢⱼ = qᵢ·kⱼ/τ (online query i, momentum key j) and P(i) the other features of i's class.
//! A feature's own key is left out of both sums: it would be a trivial positive.

use tch::{Kind, Tensor};

/// SupCon loss averaged over groups and anchors. `logits` is `[G,M,M]` (queries × keys of one
/// anchor group each, see [`super::similarity_logits`]); in every group the first `n_b`
/// features are B̂ patches, the other M − `n_b` R̂ patches. Both classes need at least two.
pub fn layer_contrastive(logits: &Tensor, n_b: i64) -> Tensor {
    let m = logits.size()[1];
    let device = logits.device();
    let is_b = Tensor::arange(m, (Kind::Int64, device)).lt(n_b);
    let same_class = is_b.unsqueeze(1).eq_tensor(&is_b.unsqueeze(0));
    let own = Tensor::eye(m, (Kind::Bool, device));
    let positive = same_class.logical_and(&own.logical_not());

    let others = logits.masked_fill(&own, f64::NEG_INFINITY);
    let log_prob = &others - others.logsumexp([2i64].as_slice(), true);
    // Zero (not −inf) where not a positive, so the sum below stays finite.
    let pos_log_prob = log_prob
        .masked_fill(&positive.logical_not(), 0.0)
        .sum_dim_intlist([2i64].as_slice(), false, logits.kind());
    let n_pos = positive.sum_dim_intlist([1i64].as_slice(), false, logits.kind());
    -(pos_log_prob / n_pos).mean(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SupCon formula with plain loops in f64.
    fn reference(logits: &[f64], g: usize, m: usize, n_b: usize) -> f64 {
        let mut total = 0.0;
        for gi in 0..g {
            let s = |i: usize, j: usize| logits[(gi * m + i) * m + j];
            for i in 0..m {
                let denom: f64 = (0..m).filter(|&a| a != i).map(|a| s(i, a).exp()).sum();
                let class = |j: usize| j < n_b;
                let pos: Vec<usize> = (0..m).filter(|&p| p != i && class(p) == class(i)).collect();
                let sum: f64 = pos.iter().map(|&p| (s(i, p).exp() / denom).ln()).sum();
                total += -sum / pos.len() as f64;
            }
        }
        total / (g * m) as f64
    }

    #[test]
    fn matches_plain_loops() {
        let (g, m, n_b) = (2, 5, 2);
        let values: Vec<f64> = (0..g * m * m)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) / 4.0)
            .collect();
        let logits = Tensor::from_slice(&values).view([g as i64, m as i64, m as i64]);
        let got = layer_contrastive(&logits, n_b as i64).double_value(&[]);
        let want = reference(&values, g, m, n_b);
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }

    #[test]
    fn separated_classes_cost_less_and_gradients_are_finite() {
        // Two B̂ and two R̂ features: aligned within a class, opposed across.
        let aligned =
            Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0]).view([1, 4, 2]);
        let mixed =
            Tensor::from_slice(&[1.0f32, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0, 0.0]).view([1, 4, 2]);
        let loss = |q: &Tensor| {
            let q = q.set_requires_grad(true);
            let l = layer_contrastive(&super::super::similarity_logits(&q, &q, 0.1), 2);
            l.backward();
            assert!(bool::try_from(q.grad().isfinite().all()).unwrap());
            l.double_value(&[])
        };
        assert!(loss(&aligned) < loss(&mixed));
    }
}
