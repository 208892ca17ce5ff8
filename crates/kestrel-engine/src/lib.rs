//! The engine side of a request: sampling and the generation loop over the model.
//! No HTTP and no kernels: tensors stay behind `kestrel-model`.

pub mod generate;
pub mod generation_config;
pub mod sampler;
