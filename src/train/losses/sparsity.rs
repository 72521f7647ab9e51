//! Sparsity: rain covers little of a frame, ‖R̂‖₁ (mean over elements).

use tch::Tensor;

/// Mean of |R̂| over all elements.
pub fn sparsity(rain: &Tensor) -> Tensor {
    rain.abs().mean(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_value() {
        let r = Tensor::from_slice(&[0.5f32, -0.25, 0.0, 1.0]);
        assert!((sparsity(&r).double_value(&[]) - 1.75 / 4.0).abs() < 1e-7);
    }
}
