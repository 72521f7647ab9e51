//! Adam written out on tch tensors: tch's optimiser keeps its moments inside libtorch where they
//! cannot be saved, and a resumed run must continue exactly as if it had never stopped.
//!
//! The update is PyTorch's `torch.optim.Adam` (no weight decay, no AMSGrad): per parameter,
//! m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², p ← p − lr·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε), with t
//! counted per parameter; a parameter without a gradient is left alone, state included.

use tch::Tensor;

use super::config::OptimiserConfig;

/// One parameter and its moments.
#[derive(Debug)]
struct Slot {
    name: String,
    value: Tensor,
    m: Tensor,
    v: Tensor,
    step: u64,
}

/// Adam over a fixed list of named parameters.
#[derive(Debug)]
pub struct Adam {
    slots: Vec<Slot>,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

/// The saved state of one parameter.
#[derive(Debug)]
pub struct SlotState<'a> {
    pub name: &'a str,
    pub m: &'a Tensor,
    pub v: &'a Tensor,
    pub step: u64,
}

impl Adam {
    /// Adam over `params` (name, tensor), moments at zero.
    pub fn new(params: Vec<(String, Tensor)>, cfg: &OptimiserConfig) -> Self {
        let slots = params
            .into_iter()
            .map(|(name, value)| Slot {
                m: value.zeros_like(),
                v: value.zeros_like(),
                name,
                value,
                step: 0,
            })
            .collect();
        Self {
            slots,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
        }
    }

    /// Zeroes every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            s.value.zero_grad();
        }
    }

    /// One update with learning rate `lr` from the gradients the parameters hold.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        let (b1, b2) = (self.beta1, self.beta2);
        for s in &mut self.slots {
            let g = s.value.grad();
            if !g.defined() {
                continue;
            }
            s.step += 1;
            let t = s.step as i32;
            let _ = s.m.lerp_(&g, 1.0 - b1);
            let _ = s.v.g_mul_scalar_(b2);
            let _ = s.v.g_add_(&(&g * &g * (1.0 - b2)));
            let bias1 = 1.0 - b1.powi(t);
            let bias2 = 1.0 - b2.powi(t);
            let denom = s.v.sqrt() / bias2.sqrt() + self.eps;
            let _ = s.value.g_sub_(&(&s.m / denom * (lr / bias1)));
        }
    }

    /// Every parameter's state, in the order given to [`Adam::new`].
    pub fn state(&self) -> impl Iterator<Item = SlotState<'_>> {
        self.slots.iter().map(|s| SlotState {
            name: &s.name,
            m: &s.m,
            v: &s.v,
            step: s.step,
        })
    }

    /// Restores one parameter's state; `false` if no parameter has that name or the shapes
    /// differ.
    pub fn restore(&mut self, name: &str, m: &Tensor, v: &Tensor, step: u64) -> bool {
        let Some(s) = self.slots.iter_mut().find(|s| s.name == name) else {
            return false;
        };
        if m.size() != s.m.size() || v.size() != s.v.size() {
            return false;
        }
        let _guard = tch::no_grad_guard();
        s.m.copy_(m);
        s.v.copy_(v);
        s.step = step;
        true
    }

    /// Back to zero moments and step counts (e.g. when stage 2 starts from a stage-1 checkpoint).
    pub fn reset(&mut self) {
        let _guard = tch::no_grad_guard();
        for s in &mut self.slots {
            let _ = s.m.zero_();
            let _ = s.v.zero_();
            s.step = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    #[test]
    fn first_steps_by_hand() {
        let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let unused = Tensor::from_slice(&[5.0f64]).set_requires_grad(true);
        let cfg = OptimiserConfig {
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            ..OptimiserConfig::default()
        };
        let mut adam = Adam::new(
            vec![
                ("p".into(), p.shallow_clone()),
                ("u".into(), unused.shallow_clone()),
            ],
            &cfg,
        );

        // Loss 0.25·p² at p = 1: g = 0.5. m = 0.25, v = 0.00025; m̂ = 0.5, v̂ = 0.25, so the
        // step is 0.1·0.5/(√0.25 + ε).
        (&p * &p * 0.25).sum(Kind::Double).backward();
        adam.step(0.1);
        let want = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8);
        assert!((p.double_value(&[0]) - want).abs() < 1e-12);
        assert_eq!(unused.double_value(&[0]), 5.0, "no gradient, no update");

        // Second step at p = 1 − step₁, g = p/2: m = 0.125 + g/2, v = 0.00025·0.999 + 0.001·g².
        adam.zero_grad();
        (&p * &p * 0.25).sum(Kind::Double).backward();
        adam.step(0.1);
        let g = (1.0 - 0.1 * 0.5 / (0.5 + 1e-8)) / 2.0;
        let m_hat = (0.125 + g / 2.0) / (1.0 - 0.25);
        let v = 0.00025 * 0.999 + 0.001 * g * g;
        let v_hat = v / (1.0 - 0.999f64.powi(2));
        let want = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8) - 0.1 * m_hat / (v_hat.sqrt() + 1e-8);
        assert!((p.double_value(&[0]) - want).abs() < 1e-12);
        let steps: Vec<u64> = adam.state().map(|s| s.step).collect();
        assert_eq!(steps, [2, 0]);
    }

    #[test]
    fn restore_checks_names_and_shapes() {
        let p = Tensor::zeros([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut adam = Adam::new(vec![("p".into(), p)], &OptimiserConfig::default());
        let two = Tensor::ones([2], (Kind::Float, Device::Cpu));
        assert!(adam.restore("p", &two, &two, 7));
        assert!(!adam.restore("q", &two, &two, 7));
        assert!(!adam.restore("p", &two.narrow(0, 0, 1), &two, 7));
        let s = adam.state().next().unwrap();
        assert_eq!((s.step, s.m.double_value(&[1])), (7, 1.0));
    }
}
