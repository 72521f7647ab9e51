//! Stage 1's supervised term: L1 distance of an estimate to its synthetic ground truth (B̂ to
//! the clean frame, R̂ to the rain layer).

use tch::Tensor;

/// Mean of |estimate − target| over all elements.
pub fn supervised(estimate: &Tensor, target: &Tensor) -> Tensor {
    (estimate - target).abs().mean(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_value() {
        let e = Tensor::from_slice(&[0.5f32, 0.25, 1.0]);
        let t = Tensor::from_slice(&[0.0f32, 0.5, 1.0]);
        assert!((supervised(&e, &t).double_value(&[]) - 0.25).abs() < 1e-7);
    }
}
