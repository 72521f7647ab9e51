//! Consistency: the clean and rain estimates must add up to the rainy frame, ‖B̂ + R̂ − O‖²
//! (mean over elements).

use tch::Tensor;

/// Mean of (B̂ + R̂ − O)² over all elements.
pub fn consistency(clean: &Tensor, rain: &Tensor, rainy: &Tensor) -> Tensor {
    (clean + rain - rainy).square().mean(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_value() {
        let b = Tensor::from_slice(&[0.5f32, 0.2, 1.0, 0.0]);
        let r = Tensor::from_slice(&[0.25f32, 0.0, -0.5, 0.1]);
        let o = Tensor::from_slice(&[0.75f32, 0.5, 0.25, 0.3]);
        // Residuals 0, −0.3, 0.25, −0.2 → (0 + 0.09 + 0.0625 + 0.04) / 4.
        let got = consistency(&b, &r, &o).double_value(&[]);
        assert!((got - 0.1925 / 4.0).abs() < 1e-7, "{got}");
    }
}
