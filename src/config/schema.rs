//! The JSON Schema of `keyward.yaml`, generated from the YAML types in [`super::raw`] so that editors, the Helm
//! chart's `values.schema.json` and CI validate against exactly what the binary accepts.

use schemars::generate::SchemaSettings;

use super::raw::RawConfig;

/// Draft-07 (the draft Helm validates `values.schema.json` with), definitions under `#/definitions`.
pub fn config_schema() -> serde_json::Value {
    let generator = SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<RawConfig>().to_value();
    if let Some(root) = schema.as_object_mut() {
        root.insert("title".into(), "keyward.yaml".into());
    }
    schema
}

/// A `humantime` duration as the file takes it (`500ms`, `10s`, `1m 30s`): the schema of every duration field,
/// which serde reads through `humantime_serde`.
pub(super) struct HumanDuration;

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "a duration: 500ms, 10s, 1m 30s",
            "type": "string",
            "pattern": r"^\s*[0-9]+\s*[a-zA-Zµ]+(\s*[0-9]+\s*[a-zA-Zµ]+)*\s*$",
        })
    }
}
