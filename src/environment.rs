//! The process environment as the binary's settings see it: read once.

use std::collections::BTreeMap;

/// One snapshot of the process environment, taken once at start: every
/// setting, the config folder's `${VAR}` and the bootstrap values are read
/// from it, and tests hand one in instead of setting process variables.
#[derive(Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

/// Names only: values may be secrets.
impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.vars.keys()).finish()
    }
}

impl Environment {
    /// The process environment now (variables that are not UTF-8 are left
    /// out: no setting can use them).
    pub fn capture() -> Environment {
        Environment {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Environment {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's value; set to the empty string counts as unset, as
    /// for every `MIGRATE_*` setting.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_raw(name).filter(|v| !v.is_empty())
    }

    /// A variable's value as set, empty or not.
    pub fn get_raw(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The same environment without `name` (a variable a command ignores).
    pub fn without(&self, name: &str) -> Environment {
        let mut env = self.clone();
        env.vars.remove(name);
        env
    }
}
