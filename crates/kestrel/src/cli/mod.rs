//! One file per subcommand.

pub mod generate;
pub mod synth;
pub mod sampling;
pub mod serve;
