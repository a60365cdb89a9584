//! `nextdet convert-weights IN OUT.safetensors`: any checkpoint nextdet can read, written as
//! safetensors under the official names (timm names renamed, `module.` stripped).

use anyhow::Result;
use std::path::Path;

/// Converts `input` to a safetensors file at `output` and says what it did.
pub fn run(input: &Path, output: &Path) -> Result<()> {
    let (count, notes) = nextdet_apis::weights::convert_weights(input, output)?;
    for note in notes {
        eprintln!("{}: {note}", input.display());
    }
    eprintln!("wrote {count} tensors to {}", output.display());
    Ok(())
}
