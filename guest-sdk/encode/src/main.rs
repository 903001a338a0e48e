//! `etch-plugin-encode IN.wasm OUT.wasm`: turns a core module built for
//! `wasm32-unknown-unknown` into the WebAssembly component etch loads.
//!
//! `wit-bindgen` embeds the plugin's world (the `component-type` custom section) in the
//! module it builds; `wit-component`'s `ComponentEncoder` reads it back and wraps the module
//! in a component whose imports and exports are exactly that world's, with no WASI at all
//! (STACK.md: building for `wasm32-wasip2` instead drags in a dozen WASI imports).
//! `scripts/build-plugins` runs this for every crate under `plugins/`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [input, output] = &args[..] else {
        bail!("usage: etch-plugin-encode IN.wasm OUT.wasm");
    };
    let module = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let component = etch_plugin_encode::encode(&module)?;
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(output, &component).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{} ({} bytes) -> {} ({} bytes)",
        input.display(),
        module.len(),
        output.display(),
        component.len()
    );
    Ok(())
}
