//! An app's life as one state machine: the phases the store records and the only
//! transitions between them. The store applies each transition as a compare-and-set
//! (`UPDATE … WHERE phase IN (its sources)`), so work that lost a race learns it at once.

/// Where an app is in its life, as the store records it. Once `Installed`, the app's
/// state is its unit's, read from systemd: the store never caches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Queuing,
    Pulling,
    Creating,
    Initing,
    Installed,
    Failed,
    Uninstalling,
}

use Phase::*;

impl Phase {
    pub const ALL: [Phase; 7] = [
        Queuing,
        Pulling,
        Creating,
        Initing,
        Installed,
        Failed,
        Uninstalling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Queuing => "queuing",
            Pulling => "pulling",
            Creating => "creating",
            Initing => "initing",
            Installed => "installed",
            Failed => "failed",
            Uninstalling => "uninstalling",
        }
    }

    /// Still in the install pipeline: a second install of the name must wait.
    pub fn is_installing(self) -> bool {
        matches!(self, Queuing | Pulling | Creating | Initing)
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Phase::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| format!("unknown phase {text:?}"))
    }
}

/// Every change of phase there is. An app record is created `Queuing` and removed
/// from `Uninstalling`; nothing else moves it. An upgrade reuses the install's phases
/// (`Upgrade` enters them from `Installed`); the operation recorded with the app tells
/// an upgrade's phases from an install's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The queue takes the app: its pull begins.
    Dequeue,
    /// Every image is in containerd: containers, folder and unit are made next.
    Pulled,
    /// Containers and unit exist: the unit starts.
    Created,
    /// The unit reported ready: the app is installed; its unit has its state now.
    Started,
    /// The install failed; the reason is recorded.
    Fail,
    /// The daemon stopped mid-install: what was made is gone, the install starts over.
    Requeue,
    /// AppUninstall, from any phase; again from `Uninstalling` when one was cut short.
    Uninstall,
    /// AppUpgrade of an installed app: the new version goes through the install's phases
    /// (pulling while the old one serves, creating, initing) and `Started` ends it.
    Upgrade,
    /// The upgrade failed (or a crash cut it short): the old version, its containers,
    /// unit and data are back; the reason is recorded.
    RollBack,
}

impl Transition {
    pub const ALL: [Transition; 9] = [
        Transition::Dequeue,
        Transition::Pulled,
        Transition::Created,
        Transition::Started,
        Transition::Fail,
        Transition::Requeue,
        Transition::Uninstall,
        Transition::Upgrade,
        Transition::RollBack,
    ];

    /// The phases this transition may start from.
    pub fn sources(self) -> &'static [Phase] {
        match self {
            Transition::Dequeue => &[Queuing],
            Transition::Pulled => &[Pulling],
            Transition::Created => &[Creating],
            Transition::Started => &[Initing],
            Transition::Fail | Transition::Requeue | Transition::RollBack => {
                &[Pulling, Creating, Initing]
            }
            Transition::Uninstall => &Phase::ALL,
            Transition::Upgrade => &[Installed],
        }
    }

    pub fn target(self) -> Phase {
        match self {
            Transition::Dequeue => Pulling,
            Transition::Pulled => Creating,
            Transition::Created => Initing,
            Transition::Started => Installed,
            Transition::Fail => Failed,
            Transition::Requeue => Queuing,
            Transition::Uninstall => Uninstalling,
            Transition::Upgrade => Pulling,
            Transition::RollBack => Installed,
        }
    }

    pub fn may_start_from(self, phase: Phase) -> bool {
        self.sources().contains(&phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_text_round_trips() {
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>(), Ok(phase));
        }
    }

    /// The whole table, written out once more: a change to the machine must change
    /// this test too.
    #[test]
    fn every_legal_and_illegal_transition() {
        let legal: &[(Transition, Phase, Phase)] = &[
            (Transition::Dequeue, Queuing, Pulling),
            (Transition::Pulled, Pulling, Creating),
            (Transition::Created, Creating, Initing),
            (Transition::Started, Initing, Installed),
            (Transition::Fail, Pulling, Failed),
            (Transition::Fail, Creating, Failed),
            (Transition::Fail, Initing, Failed),
            (Transition::Requeue, Pulling, Queuing),
            (Transition::Requeue, Creating, Queuing),
            (Transition::Requeue, Initing, Queuing),
            (Transition::Uninstall, Queuing, Uninstalling),
            (Transition::Uninstall, Pulling, Uninstalling),
            (Transition::Uninstall, Creating, Uninstalling),
            (Transition::Uninstall, Initing, Uninstalling),
            (Transition::Uninstall, Installed, Uninstalling),
            (Transition::Uninstall, Failed, Uninstalling),
            (Transition::Uninstall, Uninstalling, Uninstalling),
            (Transition::Upgrade, Installed, Pulling),
            (Transition::RollBack, Pulling, Installed),
            (Transition::RollBack, Creating, Installed),
            (Transition::RollBack, Initing, Installed),
        ];
        for transition in Transition::ALL {
            for from in Phase::ALL {
                let expected = legal
                    .iter()
                    .find(|(t, f, _)| *t == transition && *f == from);
                assert_eq!(
                    transition.may_start_from(from),
                    expected.is_some(),
                    "{transition:?} from {from:?}"
                );
                if let Some((_, _, to)) = expected {
                    assert_eq!(transition.target(), *to, "{transition:?}");
                }
            }
        }
    }

    #[test]
    fn installed_and_failed_apps_leave_only_by_uninstall_or_upgrade() {
        for transition in Transition::ALL {
            for from in [Installed, Failed, Uninstalling] {
                let may = transition == Transition::Uninstall
                    || (transition == Transition::Upgrade && from == Installed);
                assert_eq!(
                    transition.may_start_from(from),
                    may,
                    "{transition:?} from {from:?}"
                );
            }
        }
    }
}
