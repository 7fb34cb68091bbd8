//! Validation of the `keyward.dev/*` annotations, before anything of them reaches a pod spec.

use serde_json::Value;

use super::mutate::{AGENT_ID, CAPTURE, CONFIG, CONTAINERS, CPU, EXCLUDE, INJECT, MEMORY, NATIVE};

/// Checks the `keyward.dev/*` annotations of a pod that asks for injection. A bad value refuses admission
/// with this message rather than reach the pod spec, where the API server would refuse it less clearly (or
/// not at all, for a misspelled container name that silently leaves an agent unproxied).
pub fn check_annotations(pod: &Value) -> Result<(), String> {
    let annotations = pod.pointer("/metadata/annotations").and_then(Value::as_object);
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).and_then(Value::as_str);
    let boolean = |key: &str| match annotation(key) {
        None | Some("true" | "false") => Ok(()),
        Some(other) => Err(format!("{key}: `{other}` must be \"true\" or \"false\"")),
    };
    boolean(INJECT)?;
    if annotation(INJECT) != Some("true") {
        return Ok(());
    }
    boolean(NATIVE)?;
    if let Some(other) = annotation(CAPTURE).filter(|v| !["transparent", "none"].contains(v)) {
        return Err(format!("{CAPTURE}: `{other}` must be \"transparent\" or \"none\""));
    }
    for key in [CPU, MEMORY] {
        if let Some(value) = annotation(key).filter(|v| !quantity(v)) {
            return Err(format!(
                "{key}: `{value}` is not a Kubernetes quantity (e.g. 100m, 128Mi)"
            ));
        }
    }
    if let Some(id) = annotation(AGENT_ID).filter(|id| {
        id.is_empty() || id.len() > 253 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    }) {
        return Err(format!(
            "{AGENT_ID}: `{id}` must be 1 to 253 letters, digits, `-`, `_` or `.`"
        ));
    }
    if let Some(name) = annotation(CONFIG).filter(|n| {
        n.is_empty()
            || n.len() > 253
            || !n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
    }) {
        return Err(format!(
            "{CONFIG}: `{name}` is not a configuration name (a ConfigMap name: a-z, 0-9, - and .)"
        ));
    }
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c.get("name")?.as_str()).collect())
        .unwrap_or_default();
    for key in [CONTAINERS, EXCLUDE] {
        for name in annotation(key).into_iter().flat_map(|v| v.split(',')).map(str::trim) {
            if !containers.contains(&name) {
                return Err(format!(
                    "{key}: `{name}` is not a container of this pod (its containers: {})",
                    containers.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// A Kubernetes resource quantity: a decimal number with an optional binary or decimal suffix.
fn quantity(text: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        text.strip_suffix(suffix).is_some_and(|number| {
            let mut parts = number.splitn(2, '.');
            let whole = parts.next().unwrap_or("");
            let fraction = parts.next();
            !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_annotation_values_are_refused_before_they_reach_the_pod_spec() {
        let with = |annotations: Value| json!({ "metadata": { "annotations": annotations }, "spec": { "containers": [{ "name": "agent" }, { "name": "tool" }] } });
        let refused = |annotations: Value| check_annotations(&with(annotations)).unwrap_err();
        assert!(refused(json!({ INJECT: "yes" })).contains("must be \"true\" or \"false\""));
        assert!(refused(json!({ INJECT: "true", MEMORY: "lots" })).contains("not a Kubernetes quantity"));
        assert!(refused(json!({ INJECT: "true", CPU: "1.5cores" })).contains("keyward.dev/cpu"));
        assert!(refused(json!({ INJECT: "true", CONTAINERS: "agnet" })).contains("its containers: agent, tool"));
        assert!(refused(json!({ INJECT: "true", CONFIG: "../x" })).contains("not a configuration name"));
        assert!(refused(json!({ INJECT: "true", AGENT_ID: "a b" })).contains(AGENT_ID));
        assert!(refused(json!({ INJECT: "true", NATIVE: "no" })).contains(NATIVE));
        assert!(refused(json!({ INJECT: "true", CAPTURE: "iptables" })).contains(CAPTURE));
        for ok in [
            json!({ INJECT: "true", MEMORY: "128Mi", CPU: "250m", CONTAINERS: "agent", CONFIG: "sales-bot" }),
            json!({ INJECT: "true", CPU: "0.5", EXCLUDE: "tool", AGENT_ID: "sales_bot.v2", CAPTURE: "transparent" }),
            json!({ INJECT: "false", MEMORY: "lots" }),
            json!({}),
        ] {
            assert_eq!(check_annotations(&with(ok.clone())), Ok(()), "{ok}");
        }
    }
}
