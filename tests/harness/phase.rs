//! The three nexus commands of a converge from scratch, as the benchmarks that measure each of
//! them run it: a cold plan written to plan.lock, its apply, then a no-op plan that must find
//! nothing to change.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    Plan,
    Apply,
    NoopPlan,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Plan, Phase::Apply, Phase::NoopPlan];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Plan => "plan",
            Phase::Apply => "apply",
            Phase::NoopPlan => "no-op plan",
        }
    }

    /// The command's arguments, run in the project directory. The no-op plan's
    /// `--detailed-exitcode` exits 0 only when there is nothing to change.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Phase::Plan => &["plan", "-o", "plan.lock"],
            Phase::Apply => &["apply", "plan.lock"],
            Phase::NoopPlan => &["plan", "--detailed-exitcode"],
        }
    }
}
