//! The one place where every failure becomes a SPEC error code and an HTTP status.

/// Every failure an Action can answer with. The variant decides the SPEC code; the
/// payload, where there is one, becomes the `Detail`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("app_name is missing or empty")]
    AppNameBlank,
    #[error("no app {0:?} in the catalog")]
    AppNameNotExist(String),
    #[error("customer_app_name is missing or empty")]
    CustomerAppNameBlank,
    #[error("customer_app_name must match ^[a-z0-9]{{2,32}}$")]
    CustomerAppNameFormat,
    #[error("an installed app is already named {0:?}")]
    CustomerAppNameRepeat(String),
    #[error(
        "the data of the {app_name} app named {app_id:?} is kept: uninstall {app_id} with \
         delete_data=true to delete it, or choose another name"
    )]
    KeptDataOf { app_id: String, app_name: String },
    #[error("an app named {0:?} is still {1}")]
    CustomerAppNameWait(String, &'static str),
    #[error("app_version is missing or empty")]
    AppVersionBlank,
    #[error("{0}")]
    AppVersionNotExist(String),
    #[error("{0}")]
    RequirementNotEnough(String),
    #[error("{0}")]
    RequirementHostAccess(String),
    #[error("app_id is missing or empty")]
    AppIdBlank,
    #[error("app_id must match ^[a-z0-9]{{2,32}}$")]
    AppIdFormat,
    #[error("no app with app_id {0:?}")]
    AppIdNotExist(String),
    #[error("backup is missing or empty")]
    BackupBlank,
    #[error("no backup {0:?} in the backup folder")]
    BackupNotExist(String),
    #[error("{0}")]
    ActionNotExist(String),
    #[error("method {0} is not allowed: use GET or POST")]
    MethodNotAllowed(String),
    #[error("API version {0:?} is not supported: the only version is 1")]
    VersionNotSupport(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Container(String),
    #[error("{0}")]
    System(String),
}

/// Every SPEC error code. Its spelling and its messages (`crate::messages`) are each
/// in one exhaustive match, so a code cannot be misspelled or lack a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    AppNameBlank,
    AppNameNotExist,
    CustomerAppNameBlank,
    CustomerAppNameFormat,
    CustomerAppNameRepeat,
    CustomerAppNameWait,
    AppVersionBlank,
    AppVersionNotExist,
    RequirementNotEnough,
    RequirementHostAccess,
    AppIdBlank,
    AppIdFormat,
    AppIdNotExist,
    BackupBlank,
    BackupNotExist,
    ActionNotExist,
    VersionNotSupport,
    TooLarge,
    Format,
    Busy,
    ContainerError,
    SystemError,
}

impl Code {
    pub const ALL: [Code; 22] = [
        Code::AppNameBlank,
        Code::AppNameNotExist,
        Code::CustomerAppNameBlank,
        Code::CustomerAppNameFormat,
        Code::CustomerAppNameRepeat,
        Code::CustomerAppNameWait,
        Code::AppVersionBlank,
        Code::AppVersionNotExist,
        Code::RequirementNotEnough,
        Code::RequirementHostAccess,
        Code::AppIdBlank,
        Code::AppIdFormat,
        Code::AppIdNotExist,
        Code::BackupBlank,
        Code::BackupNotExist,
        Code::ActionNotExist,
        Code::VersionNotSupport,
        Code::TooLarge,
        Code::Format,
        Code::Busy,
        Code::ContainerError,
        Code::SystemError,
    ];

    /// The code as clients match on it.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::AppNameBlank => "Param.AppName.Blank",
            // The seed spells it without the final "t"; clients match on that spelling.
            Code::AppNameNotExist => "Param.AppName.NotExis",
            Code::CustomerAppNameBlank => "Param.CustomerAppName.Blank",
            Code::CustomerAppNameFormat => "Param.CustomerAppName.FormatError",
            Code::CustomerAppNameRepeat => "Param.CustomerAppName.Repeat",
            Code::CustomerAppNameWait => "Param.CustomerAppName.Wait",
            Code::AppVersionBlank => "Param.AppVersion.Blank",
            Code::AppVersionNotExist => "Param.AppVersion.NotExist",
            Code::RequirementNotEnough => "Requirement.NotEnough",
            Code::RequirementHostAccess => "Requirement.HostAccess",
            Code::AppIdBlank => "Param.APPID.Blank",
            Code::AppIdFormat => "Param.APPID.FormatError",
            Code::AppIdNotExist => "Param.APPID.NotExist",
            Code::BackupBlank => "Param.Backup.Blank",
            Code::BackupNotExist => "Param.Backup.NotExist",
            Code::ActionNotExist => "Action.NotExist",
            Code::VersionNotSupport => "Param.Version.NotSupport",
            Code::TooLarge => "Param.TooLarge",
            Code::Format => "Param.Format.Error",
            Code::Busy => "App.Busy",
            Code::ContainerError => "Server.Container.Error",
            Code::SystemError => "Server.SystemError",
        }
    }

    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|code| code.as_str() == text)
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl AppError {
    /// The SPEC error code.
    pub fn code(&self) -> Code {
        use AppError::*;
        match self {
            AppNameBlank => Code::AppNameBlank,
            AppNameNotExist(_) => Code::AppNameNotExist,
            CustomerAppNameBlank => Code::CustomerAppNameBlank,
            CustomerAppNameFormat => Code::CustomerAppNameFormat,
            CustomerAppNameRepeat(_) | KeptDataOf { .. } => Code::CustomerAppNameRepeat,
            CustomerAppNameWait(..) => Code::CustomerAppNameWait,
            AppVersionBlank => Code::AppVersionBlank,
            AppVersionNotExist(_) => Code::AppVersionNotExist,
            RequirementNotEnough(_) => Code::RequirementNotEnough,
            RequirementHostAccess(_) => Code::RequirementHostAccess,
            AppIdBlank => Code::AppIdBlank,
            AppIdFormat => Code::AppIdFormat,
            AppIdNotExist(_) => Code::AppIdNotExist,
            BackupBlank => Code::BackupBlank,
            BackupNotExist(_) => Code::BackupNotExist,
            // A path or a method the API does not serve: either way no such Action exists.
            ActionNotExist(_) | MethodNotAllowed(_) => Code::ActionNotExist,
            VersionNotSupport(_) => Code::VersionNotSupport,
            TooLarge(_) => Code::TooLarge,
            Format(_) => Code::Format,
            Busy(_) => Code::Busy,
            Container(_) => Code::ContainerError,
            System(_) => Code::SystemError,
        }
    }

    /// HTTP status: the seed's "200 or 404", except the two transport-level refusals.
    pub fn http_status(&self) -> u16 {
        match self {
            AppError::MethodNotAllowed(_) => 405,
            AppError::TooLarge(_) => 413,
            _ => 404,
        }
    }

    pub fn detail(&self) -> String {
        self.to_string()
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(err: crate::store::StoreError) -> Self {
        match err {
            crate::store::StoreError::Busy(..) => AppError::Busy(err.to_string()),
            err => AppError::System(err.to_string()),
        }
    }
}

/// An error with its chain of causes, as one line: transport errors keep the useful
/// part ("No such file or directory") in their sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
