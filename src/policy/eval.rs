//! Runs one compiled entry point against an input document.
//!
//! Decisions run on regorus' register VM (RVM) rather than its tree-walking interpreter: the interpreter
//! builds an engine per call and measured about 2.5 times slower on the shipped policies (see BENCHMARKS.md).
//! A VM is mutable state, so each worker thread keeps its own, created on first use of a program and reused
//! afterwards. A policy the RVM compiler cannot translate keeps working on the interpreter.

use std::cell::RefCell;
use std::sync::Arc;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::RegoVM;
use regorus::rvm::Program;
use regorus::{CompiledPolicy, Value};

/// Far above any sane policy (the shipped ones use a few hundred) yet it stops a runaway loop over large data.
/// Hitting it is an evaluation error, so the request is denied (fail closed).
const MAX_INSTRUCTIONS: usize = 5_000_000;

/// VMs kept per thread. Reloads leave VMs of replaced programs behind; the oldest go first.
const VMS_PER_THREAD: usize = 16;

thread_local! {
    /// This thread's VMs, most recently used first, keyed by the address of the program they run (the VM holds
    /// the `Arc`, so the address cannot be reused while the entry exists).
    static VMS: RefCell<Vec<(usize, RegoVM)>> = const { RefCell::new(Vec::new()) };
}

pub struct Evaluator {
    policy: CompiledPolicy,
    vm: Option<Vm>,
}

struct Vm {
    program: Arc<Program>,
    data: Value,
}

impl Evaluator {
    /// `data` is the merged data document of the policy directory. The VM path is taken when the RVM compiler
    /// accepts the policy, otherwise the interpreter path (with a warning naming the reason).
    pub fn new(policy: CompiledPolicy, entrypoint: &str, data: Value) -> Self {
        let vm = match Compiler::compile_from_policy(&policy, &[entrypoint]) {
            Ok(program) => Some(Vm { program, data }),
            Err(e) => {
                tracing::warn!(entrypoint, error = %e, "policy runs on the slower interpreter: the RVM compiler refused it");
                None
            }
        };
        Self { policy, vm }
    }

    pub fn eval(&self, input: Value) -> anyhow::Result<Value> {
        match &self.vm {
            Some(vm) => vm.eval(&self.policy, input),
            None => self.policy.eval_with_input(input),
        }
    }
}

impl Vm {
    fn eval(&self, policy: &CompiledPolicy, input: Value) -> anyhow::Result<Value> {
        let key = Arc::as_ptr(&self.program) as usize;
        VMS.with(|cell| {
            let mut vms = cell.borrow_mut();
            let at = match vms.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    vms.truncate(VMS_PER_THREAD - 1);
                    vms.push((key, self.fresh(policy)?));
                    vms.len() - 1
                }
            };
            if at != 0 {
                let entry = vms.remove(at);
                vms.insert(0, entry);
            }
            let vm = &mut vms[0].1;
            vm.set_input(input);
            let result = vm.execute_entry_point_by_index(0).map_err(anyhow::Error::from);
            // The input is not kept alive (nor readable) between requests.
            vm.set_input(Value::Undefined);
            result
        })
    }

    fn fresh(&self, policy: &CompiledPolicy) -> anyhow::Result<RegoVM> {
        let mut vm = RegoVM::new_with_policy(policy.clone());
        vm.load_program(self.program.clone());
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        vm.set_data(self.data.clone())?;
        Ok(vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{load, DEFAULT_ENTRYPOINT};
    use serde_json::json;

    /// Requests that reach the allow and the deny branches of every shipped policy.
    fn inputs() -> Vec<serde_json::Value> {
        let request = |method: &str, path: &str, body: serde_json::Value| json!({"request": {"method": method, "path": path, "body": body, "body_parsed": !body.is_null()}});
        let mut all = vec![];
        for method in ["GET", "HEAD", "POST", "DELETE"] {
            for path in [
                "/services/data/v60.0/sobjects/Opportunity",
                "/services/data/v60.0/query",
                "/repos/acme/agent-sandbox/issues",
                "/repos/acme/agent-sandbox/issues/12/comments",
                "/repos/acme/agent-sandbox/pulls/3/merge",
                "/repos/other/repo/issues",
            ] {
                all.push(request(method, path, serde_json::Value::Null));
                for (amount, industry) in [(25000, "Technology"), (250000, "Technology"), (10, "Retail")] {
                    all.push(request(method, path, json!({"Amount": amount, "Industry": industry})));
                }
            }
        }
        for call in [
            json!({"method": "tools/list"}),
            json!({"method": "tools/call", "tool": "search_docs"}),
            json!({"method": "tools/call", "tool": "delete_everything"}),
            json!({"batch": [{"method": "ping"}, {"method": "tools/call", "tool": "search_docs"}]}),
            json!({"batch": [{"method": "ping"}, {"method": "tools/call", "tool": "rm"}]}),
        ] {
            all.push(json!({"request": {"method": "POST", "path": "/mcp"}, "jsonrpc": call}));
        }
        for (day, hour) in [(1, 10), (6, 10), (2, 23)] {
            all.push(json!({"request": {"method": "GET", "path": "/"}, "time": {
                "weekday_number": day, "weekday": "Someday", "hour": hour, "timezone": "UTC"}}));
        }
        all
    }

    /// The VM must decide exactly as the interpreter (the reference implementation) does.
    #[test]
    fn vm_and_interpreter_agree_on_every_shipped_policy() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut dirs: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        assert!(dirs.len() >= 5, "{dirs:?}");
        for dir in dirs {
            let (mut engine, _) = load::engine(&dir, false).unwrap();
            let policy = engine
                .compile_with_entrypoint(&regorus::Rc::from(DEFAULT_ENTRYPOINT))
                .unwrap();
            let evaluator = Evaluator::new(policy.clone(), DEFAULT_ENTRYPOINT, engine.get_data());
            assert!(evaluator.vm.is_some(), "{} runs on the VM", dir.display());
            let (mut allowed, mut denied) = (0, 0);
            for input in inputs() {
                let input = Value::from(input);
                let expected = policy.eval_with_input(input.clone()).unwrap();
                let got = evaluator.eval(input.clone()).unwrap();
                assert_eq!(got, expected, "{} on {input}", dir.display());
                match got["allow"] {
                    Value::Bool(true) => allowed += 1,
                    _ => denied += 1,
                }
            }
            assert!(
                allowed > 0 && denied > 0,
                "{}: {allowed} allowed, {denied} denied",
                dir.display()
            );
        }
    }
}
