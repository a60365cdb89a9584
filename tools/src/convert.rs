//! `nextdet convert-weights IN OUT.safetensors`: any checkpoint nextdet can read, written as
//! safetensors under the official names (timm names renamed, `module.` stripped).

use anyhow::{Context, Result};
use nextdet_backbones::weights::read_canonical;
use std::path::Path;

/// Converts `input` to a safetensors file at `output`, written atomically.
pub fn run(input: &Path, output: &Path) -> Result<()> {
    let (tensors, notes) = read_canonical(input)?;
    for note in notes {
        eprintln!("{}: {note}", input.display());
    }
    let tmp = output.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("moving {} into place", output.display()))?;
    eprintln!("wrote {} tensors to {}", tensors.len(), output.display());
    Ok(())
}
