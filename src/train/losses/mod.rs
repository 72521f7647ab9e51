//! The terms of the ANLCL objective (docs/ARCHITECTURE.md, Training (ANLCL)), each a pure function
//! of tensors in its own module, tested against values worked out by hand or by plain loops.
//!
//! Image terms average over elements, so their weights do not depend on the crop size. The
//! contrastive terms take similarity logits from [`similarity_logits`], computed once and shared
//! by the layer and asymmetric terms.

pub mod asymmetric;
pub mod consistency;
pub mod gan;
pub mod layer_contrastive;
pub mod location;
pub mod sparsity;
pub mod supervised;

pub use asymmetric::{asymmetric, entropy_sign, histogram_entropy};
pub use consistency::consistency;
pub use gan::{discriminator_loss, generator_loss};
pub use layer_contrastive::layer_contrastive;
pub use location::location_nce;
pub use sparsity::sparsity;
pub use supervised::supervised;

use tch::Tensor;

/// Logits `q·kᵀ / τ` of every query against every key within each group: `[G,M,D]` × `[G,M,D]`
/// → `[G,M,M]`. With L2-normalised features these are cosine similarities over τ.
pub fn similarity_logits(queries: &Tensor, keys: &Tensor, temperature: f64) -> Tensor {
    queries.matmul(&keys.transpose(1, 2)) / temperature
}
