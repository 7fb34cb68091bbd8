//! The kill switch: block one agent, or everything, from the admin API. A block refuses new requests at once
//! and closes the intercepted connections that are open, so an agent caught misbehaving is cut off in the
//! middle of what it is doing, not after.

use std::collections::HashSet;
use std::sync::RwLock;

use tokio::sync::watch;

#[derive(Default)]
struct Blocked {
    all: bool,
    agents: HashSet<String>,
    /// The fleet-wide set from the controller, replaced whole at each change; local blocks are kept apart so
    /// that neither lifts the other's.
    fleet: Fleet,
}

/// The blocked set the controller distributes.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fleet {
    pub all: bool,
    pub agents: Vec<String>,
}

pub struct KillSwitch {
    blocked: RwLock<Blocked>,
    /// Bumped at every block, so open connections can watch for one.
    generation: watch::Sender<u64>,
}

impl Default for KillSwitch {
    fn default() -> Self {
        Self {
            blocked: RwLock::default(),
            generation: watch::channel(0).0,
        }
    }
}

impl KillSwitch {
    /// Blocks one agent, or all with `None`.
    pub fn block(&self, agent: Option<&str>) {
        let mut blocked = self.blocked.write().unwrap_or_else(|e| e.into_inner());
        match agent {
            Some(id) => {
                blocked.agents.insert(id.to_string());
            }
            None => blocked.all = true,
        }
        drop(blocked);
        self.generation.send_modify(|g| *g += 1);
        tracing::warn!(agent = agent.unwrap_or("*"), "kill switch: blocked");
    }

    /// Lifts a block on one agent, or the global block with `None`.
    pub fn unblock(&self, agent: Option<&str>) {
        let mut blocked = self.blocked.write().unwrap_or_else(|e| e.into_inner());
        match agent {
            Some(id) => {
                blocked.agents.remove(id);
            }
            None => blocked.all = false,
        }
        tracing::warn!(agent = agent.unwrap_or("*"), "kill switch: unblocked");
    }

    pub fn is_blocked(&self, agent: &str) -> bool {
        let blocked = self.blocked.read().unwrap_or_else(|e| e.into_inner());
        blocked.all
            || blocked.agents.contains(agent)
            || blocked.fleet.all
            || blocked.fleet.agents.iter().any(|a| a == agent)
    }

    /// Replaces the fleet-wide set; open connections of a newly blocked agent close as for a local block.
    pub fn set_fleet(&self, fleet: Fleet) {
        let mut blocked = self.blocked.write().unwrap_or_else(|e| e.into_inner());
        if blocked.fleet == fleet {
            return;
        }
        tracing::warn!(all = fleet.all, agents = ?fleet.agents, "kill switch: fleet-wide blocked set changed");
        blocked.fleet = fleet;
        drop(blocked);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Resolves when a block covering `agent` is issued after this call: open connections await this and
    /// close. (A connection opened while a block is already in force stays up, so each of its requests gets
    /// the readable 403 instead of a dropped connection.)
    pub async fn blocked(&self, agent: &str) {
        let mut changes = self.generation.subscribe();
        loop {
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
            if self.is_blocked(agent) {
                return;
            }
        }
    }

    /// `{"all": bool, "agents": [...]}` for the admin API.
    pub fn status(&self) -> serde_json::Value {
        let blocked = self.blocked.read().unwrap_or_else(|e| e.into_inner());
        let mut agents: Vec<&String> = blocked.agents.iter().collect();
        agents.sort();
        serde_json::json!({ "all": blocked.all, "agents": agents, "fleet": blocked.fleet })
    }
}
