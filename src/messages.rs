//! User-facing messages per SPEC code, in the caller's `Language`.

use crate::error::Code;

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

/// The message of `code`: Chinese is the seed's text.
pub fn message(code: Code, language: Language) -> &'static str {
    let (chinese, english) = match code {
        Code::AppNameBlank => ("APP名称为空", "The app name is empty."),
        Code::AppNameNotExist => ("不支持安装指定的App", "The specified app is not supported."),
        Code::CustomerAppNameBlank => ("用户自定义APP名称为空", "The custom app name is empty."),
        Code::CustomerAppNameFormat => (
            "用户自定义APP名称只能是数字和小写字母组成",
            "The custom app name may contain only digits and lowercase letters (2-32).",
        ),
        Code::CustomerAppNameRepeat => (
            "已经安装了此应用，请重新指定APP名称",
            "An app of this name is already installed; please choose another name.",
        ),
        Code::CustomerAppNameWait => (
            "同名应用已经在安装等待中，请重新指定APP名称",
            "An app of this name is still waiting to be installed; please choose another name.",
        ),
        Code::AppVersionBlank => (
            "安装App的版本不能为空",
            "The app version to install is empty.",
        ),
        Code::AppVersionNotExist => (
            "不支持安装指定的版本",
            "The specified version is not supported.",
        ),
        Code::RequirementNotEnough => (
            "系统资源（cpu，内存，磁盘空间）不足",
            "Insufficient system resources (cpu, memory, disk space).",
        ),
        Code::RequirementHostAccess => (
            "该应用需要访问主机（特权模式、设备、主机网络或主机目录），但配置未允许（allow_host_access）",
            "The app needs host access (privileged mode, devices, host namespaces or host folders), which the configuration does not allow (allow_host_access).",
        ),
        Code::AppIdBlank => ("APP_ID 不能为空", "APP_ID must not be empty."),
        Code::AppIdFormat => (
            "APP_ID 只能是数字和小写字母组成",
            "APP_ID may contain only digits and lowercase letters (2-32).",
        ),
        Code::AppIdNotExist => ("APP不存在", "The app does not exist."),
        Code::BackupBlank => ("备份名称不能为空", "The backup name is empty."),
        Code::BackupNotExist => ("备份不存在", "The backup does not exist."),
        Code::ActionNotExist => ("接口不存在", "The Action does not exist."),
        Code::VersionNotSupport => ("不支持该接口版本", "The API version is not supported."),
        Code::TooLarge => ("请求内容过大", "The request is too large."),
        Code::Format => ("参数格式错误", "A parameter has the wrong format."),
        Code::Busy => (
            "该应用正在执行其他操作，请稍后再试",
            "Another operation on this app is in progress.",
        ),
        Code::ContainerError => (
            "容器运行时出错",
            "The container runtime refused the operation.",
        ),
        Code::SystemError => ("系统错误", "An unexpected system error occurred."),
    };
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
    fn every_code_has_both_languages_and_parses_back() {
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(code));
            assert_ne!(
                message(code, Language::Chinese),
                message(code, Language::English)
            );
        }
    }
}
