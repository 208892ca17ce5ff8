//! One file per subcommand.

pub mod bench;
pub mod generate;
pub mod sampling;
pub mod serve;
pub mod synth;
