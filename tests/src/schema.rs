//! What pkttrace prints is checked against the JSON Schema it ships
//! (`pkttrace schema follow|dns|topology`), read once from the binary
//! under test.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::pkttrace;

/// Fails with the first complaint of the schema of `of` ("follow", "dns",
/// "topology") about `output`.
pub fn check_schema(of: &str, output: &Value) -> Result<()> {
    static SCHEMAS: OnceLock<Mutex<HashMap<String, Value>>> = OnceLock::new();
    let mut schemas = SCHEMAS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !schemas.contains_key(of) {
        let run = pkttrace(["schema", of])?;
        if !run.success() {
            bail!("pkttrace schema {of} failed: {run}");
        }
        let schema: Value = serde_json::from_str(&run.stdout)
            .with_context(|| format!("pkttrace schema {of} is no JSON"))?;
        schemas.insert(of.to_owned(), schema);
    }
    let validator = jsonschema::validator_for(&schemas[of])
        .with_context(|| format!("pkttrace schema {of} is no valid JSON Schema"))?;
    if let Err(error) = validator.validate(output) {
        bail!(
            "{of}'s schema refuses it at {}: {error}\n{output:#}",
            error.instance_path()
        );
    }
    Ok(())
}
