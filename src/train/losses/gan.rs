//! Least-squares GAN (Mao et al.): D scores real clean frames towards 1 and B̂ towards 0; G
//! pushes D's scores of B̂ towards 1.

use tch::Tensor;

/// D's loss: ½·(mean (D(B) − 1)² + mean D(B̂)²).
pub fn discriminator_loss(real_scores: &Tensor, fake_scores: &Tensor) -> Tensor {
    ((real_scores - 1.0).square().mean(None) + fake_scores.square().mean(None)) * 0.5
}

/// G's adversarial loss: mean (D(B̂) − 1)².
pub fn generator_loss(fake_scores: &Tensor) -> Tensor {
    (fake_scores - 1.0).square().mean(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_values() {
        let real = Tensor::from_slice(&[1.0f32, 0.5]);
        let fake = Tensor::from_slice(&[0.0f32, 0.5, 1.0]);
        // Real: (0 + 0.25)/2 = 0.125; fake: (0 + 0.25 + 1)/3.
        let d = discriminator_loss(&real, &fake).double_value(&[]);
        assert!((d - 0.5 * (0.125 + 1.25 / 3.0)).abs() < 1e-7, "{d}");
        // (1 + 0.25 + 0)/3.
        let g = generator_loss(&fake).double_value(&[]);
        assert!((g - 1.25 / 3.0).abs() < 1e-7, "{g}");
    }
}
