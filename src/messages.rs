//! User-facing messages per SPEC code, in the caller's `Language`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    English,
    Chinese,
}

impl Language {
    /// From the `Language` request header: any `zh*` is Chinese, anything else English.
    pub fn from_header(value: Option<&str>) -> Language {
        match value {
            Some(v) if v.trim().to_ascii_lowercase().starts_with("zh") => Language::Chinese,
            _ => Language::English,
        }
    }
}

/// (code, Chinese — the seed's text, English).
const MESSAGES: &[(&str, &str, &str)] = &[
    (
        "Param.AppName.Blank",
        "APP名称为空",
        "The app name is empty.",
    ),
    (
        "Param.AppName.NotExis",
        "不支持安装指定的App",
        "The specified app is not supported.",
    ),
    (
        "Param.CustomerAppName.Blank",
        "用户自定义APP名称为空",
        "The custom app name is empty.",
    ),
    (
        "Param.CustomerAppName.FormatError",
        "用户自定义APP名称只能是数字和小写字母组成",
        "The custom app name may contain only digits and lowercase letters (2-32).",
    ),
    (
        "Param.CustomerAppName.Repeat",
        "已经安装了此应用，请重新指定APP名称",
        "An app of this name is already installed; please choose another name.",
    ),
    (
        "Param.CustomerAppName.Wait",
        "同名应用已经在安装等待中，请重新指定APP名称",
        "An app of this name is still waiting to be installed; please choose another name.",
    ),
    (
        "Param.AppVersion.Blank",
        "安装App的版本不能为空",
        "The app version to install is empty.",
    ),
    (
        "Param.AppVersion.NotExist",
        "不支持安装指定的版本",
        "The specified version is not supported.",
    ),
    (
        "Requirement.NotEnough",
        "系统资源（cpu，内存，磁盘空间）不足",
        "Insufficient system resources (cpu, memory, disk space).",
    ),
    (
        "Param.APPID.Blank",
        "APP_ID 不能为空",
        "APP_ID must not be empty.",
    ),
    (
        "Param.APPID.FormatError",
        "APP_ID 只能是数字和小写字母组成",
        "APP_ID may contain only digits and lowercase letters (2-32).",
    ),
    (
        "Param.APPID.NotExist",
        "APP不存在",
        "The app does not exist.",
    ),
    (
        "Action.NotExist",
        "接口不存在",
        "The Action does not exist.",
    ),
    (
        "Param.Version.NotSupport",
        "不支持该接口版本",
        "The API version is not supported.",
    ),
    (
        "Param.TooLarge",
        "请求内容过大",
        "The request is too large.",
    ),
    (
        "Param.Format.Error",
        "参数格式错误",
        "A parameter has the wrong format.",
    ),
    (
        "App.Busy",
        "该应用正在执行其他操作，请稍后再试",
        "Another operation on this app is in progress.",
    ),
    (
        "Server.Container.Error",
        "容器运行时出错",
        "The container runtime refused the operation.",
    ),
    (
        "Server.SystemError",
        "系统错误",
        "An unexpected system error occurred.",
    ),
];

pub fn message(code: &str, language: Language) -> &'static str {
    let (_, chinese, english) = MESSAGES
        .iter()
        .find(|(c, _, _)| *c == code)
        .copied()
        .unwrap_or(("", "系统错误", "An unexpected system error occurred."));
    match language {
        Language::Chinese => chinese,
        Language::English => english,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_selects_language() {
        assert_eq!(Language::from_header(Some("zh-CN")), Language::Chinese);
        assert_eq!(Language::from_header(Some("ZH")), Language::Chinese);
        assert_eq!(Language::from_header(Some("en-US")), Language::English);
        assert_eq!(Language::from_header(None), Language::English);
    }

    #[test]
    fn every_code_has_both_languages() {
        for (code, chinese, english) in MESSAGES {
            assert_eq!(message(code, Language::Chinese), *chinese);
            assert_eq!(message(code, Language::English), *english);
        }
    }
}
