//! The location contrastive term (σ): PatchNCE (CUT) between O and B̂ on G_B's own encoder
//! features. The query is B̂'s feature at an anchor; its positive is O's feature (momentum key)
//! at the same place; the negatives are O's features at the N patches farthest from the anchor
//! in O ("reverse non-local"), not random ones. Cross-entropy over 1 + N logits, the positive
//! first (the printed formula lacks the log; CUT's code has it).

use tch::Tensor;

/// Mean over groups of −log softmax(l)₀, l = [q·k⁺, q·k⁻₁, …, q·k⁻_N] / τ. `query` and
/// `positive` are `[G,D]`, `negatives` `[G,N,D]`; `drop` (`bool [G,N]`, optional) removes
/// negatives (e.g. those that fall on the positive's own feature cell).
pub fn location_nce(
    query: &Tensor,
    positive: &Tensor,
    negatives: &Tensor,
    drop: Option<&Tensor>,
    temperature: f64,
) -> Tensor {
    let pos = (query * positive).sum_dim_intlist([1i64].as_slice(), true, query.kind());
    let mut neg = negatives.matmul(&query.unsqueeze(2)).squeeze_dim(2);
    if let Some(drop) = drop {
        neg = neg.masked_fill(drop, f64::NEG_INFINITY);
    }
    let logits = Tensor::cat(&[pos, neg], 1) / temperature;
    -logits.log_softmax(1, None).select(1, 0).mean(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_values() {
        let q = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        let kp = Tensor::from_slice(&[0.6f32, 0.8]).view([1, 2]);
        let kn = Tensor::from_slice(&[0.0f32, 1.0, -1.0, 0.0]).view([1, 2, 2]);
        // Logits 0.6/0.5, 0/0.5, −1/0.5 = 1.2, 0, −2.
        let got = location_nce(&q, &kp, &kn, None, 0.5).double_value(&[]);
        let want = -(1.2 - (1.2f64.exp() + 1.0 + (-2.0f64).exp()).ln());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // Dropping the first negative leaves 1.2 and −2.
        let drop = Tensor::from_slice(&[true, false]).view([1, 2]);
        let got = location_nce(&q, &kp, &kn, Some(&drop), 0.5).double_value(&[]);
        let want = -(1.2 - (1.2f64.exp() + (-2.0f64).exp()).ln());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
