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
    #[error("an app named {0:?} is still {1}")]
    CustomerAppNameWait(String, &'static str),
    #[error("app_version is missing or empty")]
    AppVersionBlank,
    #[error("{0}")]
    AppVersionNotExist(String),
    #[error("{0}")]
    RequirementNotEnough(String),
    #[error("app_id is missing or empty")]
    AppIdBlank,
    #[error("app_id must match ^[a-z0-9]{{2,32}}$")]
    AppIdFormat,
    #[error("no app with app_id {0:?}")]
    AppIdNotExist(String),
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

impl AppError {
    /// The SPEC error code, spelled exactly as clients match on it.
    pub fn code(&self) -> &'static str {
        use AppError::*;
        match self {
            AppNameBlank => "Param.AppName.Blank",
            // The seed spells it without the final "t"; clients match on that spelling.
            AppNameNotExist(_) => "Param.AppName.NotExis",
            CustomerAppNameBlank => "Param.CustomerAppName.Blank",
            CustomerAppNameFormat => "Param.CustomerAppName.FormatError",
            CustomerAppNameRepeat(_) => "Param.CustomerAppName.Repeat",
            CustomerAppNameWait(..) => "Param.CustomerAppName.Wait",
            AppVersionBlank => "Param.AppVersion.Blank",
            AppVersionNotExist(_) => "Param.AppVersion.NotExist",
            RequirementNotEnough(_) => "Requirement.NotEnough",
            AppIdBlank => "Param.APPID.Blank",
            AppIdFormat => "Param.APPID.FormatError",
            AppIdNotExist(_) => "Param.APPID.NotExist",
            // A path or a method the API does not serve: either way no such Action exists.
            ActionNotExist(_) | MethodNotAllowed(_) => "Action.NotExist",
            VersionNotSupport(_) => "Param.Version.NotSupport",
            TooLarge(_) => "Param.TooLarge",
            Format(_) => "Param.Format.Error",
            Busy(_) => "App.Busy",
            Container(_) => "Server.Container.Error",
            System(_) => "Server.SystemError",
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
        AppError::System(err.to_string())
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
