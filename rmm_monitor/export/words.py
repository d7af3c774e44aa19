"""The fixed words of the quarterly evaluation (report.html/pdf, its charts and kpis.xlsx) in each language of
core.lang.LANGS, in one table, and `Langs`: the language(s) one export is written in.

Only the report's own words are here. What the catalog names (KPI titles and descriptions, family names and
intros, review sections, statuses, outcomes) comes from the catalog and metrics/labels, never from this table;
numbers, dates and percentages are formatted once (core.fmt) and are the same string in every language. Chinese
terms follow metrics/labels/glossary.yml (the NMPA/CDE guideline's words)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from rmm_monitor.core.lang import DEFAULT, say

# One language: a str; two (bilingual export): a (leading, other) tuple, rendered by each renderer as it sees fit.
Txt = Union[str, tuple[str, ...]]

WORDS: dict[str, dict[str, str]] = {
    # --- document -------------------------------------------------------------------------------------------
    "doc_title": {"en": "aRMM effectiveness evaluation {quarter}", "zh": "额外风险最小化措施有效性评估 {quarter}"},
    "h1": {
        "en": "Effectiveness of the additional risk minimisation measures — {quarter}",
        "zh": "额外风险最小化措施的有效性评估 — {quarter}",
    },
    "footer": {
        "en": "as of {as_of} · catalog {catalog} · rmm-monitor {version}",
        "zh": "数据截至 {as_of} · 目录 {catalog} · rmm-monitor {version}",
    },
    "page": {"en": "page {n}", "zh": "第 {n} 页"},
    "intro": {
        "en": "Products: {products}. Data as of {as_of} (events known at that time; a re-run with the same as-of "
        "gives the same numbers). Catalog {catalog}, rmm-monitor {version}. {events} events.",
        "zh": "产品：{products}。数据截至 {as_of}（仅使用截至该时间已知的事件；以相同的截至时间重新运行得到相同的"
        "数字）。目录 {catalog}，rmm-monitor {version}。事件 {events} 条。",
    },
    "none": {"en": "none", "zh": "无"},
    "list_sep": {"en": ", ", "zh": "，"},
    "not_signed": {
        "en": "Not signed. (A QPPV signs an evaluation with rmm export --sign.)",
        "zh": "未签名。（药物警戒负责人以 rmm export --sign 对评估进行电子签名。）",
    },
    "signed": {
        "en": "Signed electronically by {name} ({user}), meaning: {meaning}, at {at}. The signature (Ed25519, made "
        "with the signer's password; signature.json) covers manifest.json, which holds the sha256 of every file of "
        "this evaluation: rmm export verify DIR checks them.",
        "zh": "电子签名：{name}（{user}），含义：{meaning}，时间 {at}。签名（Ed25519，以签名人的密码生成；"
        "signature.json）覆盖 manifest.json，其中记录本评估每个文件的 sha256：rmm export verify DIR 可核验。",
    },
    "meaning.approved": {"en": "approved", "zh": "批准"},
    "meaning.reviewed": {"en": "reviewed", "zh": "已审阅"},
    # --- first page: what needs action ----------------------------------------------------------------------
    "h_action": {"en": "Breaches and warnings this quarter", "zh": "本季度超限和预警"},
    "action_intro": {
        "en": "{breaches} KPI × product rows in breach and {warnings} in warning (all sites together or at one site "
        "at least), breaches first; sites in breach or warning with their value and n; the review case opened for "
        "the KPI's section of the educational materials, with its state at the as-of time. Details in sections 1–4.",
        "zh": "{breaches} 个指标 × 产品超限，{warnings} 个预警（全部医疗机构合计或至少一家医疗机构），超限在前；"
        "列出超限或预警的医疗机构及其数值和例数；以及针对该指标所属教育材料章节开启的评估案例及其截至时的状态。"
        "详见第 1–4 节。",
    },
    "action_none": {
        "en": "No KPI is in breach or warning this quarter, for all sites together or at any site.",
        "zh": "本季度无指标超限或预警（全部医疗机构合计及各医疗机构均无）。",
    },
    "no_case": {"en": "no case", "zh": "无案例"},
    "and_more": {"en": "and {n} more", "zh": "另有 {n} 个"},
    # --- column headers -------------------------------------------------------------------------------------
    "col.kpi": {"en": "KPI", "zh": "指标"},
    "col.title": {"en": "title", "zh": "名称"},
    "col.product": {"en": "product", "zh": "产品"},
    "col.site": {"en": "site", "zh": "医疗机构"},
    "col.value": {"en": "value", "zh": "数值"},
    "col.ci": {"en": "95% CI", "zh": "95% 置信区间"},
    "col.ci_low": {"en": "CI low", "zh": "置信区间下限"},
    "col.ci_high": {"en": "CI high", "zh": "置信区间上限"},
    "col.threshold": {"en": "threshold", "zh": "阈值"},
    "col.n": {"en": "n", "zh": "n"},
    "col.numerator": {"en": "numerator", "zh": "分子"},
    "col.pending": {"en": "pending", "zh": "待定"},
    "col.prev": {"en": "previous quarter", "zh": "上季度"},
    "col.change": {"en": "change", "zh": "变化"},
    "col.status": {"en": "status", "zh": "状态"},
    "col.all_sites": {"en": "all sites", "zh": "全部医疗机构"},
    "col.sites_breach": {"en": "sites in breach", "zh": "超限的医疗机构"},
    "col.sites_warning": {"en": "sites in warning", "zh": "预警的医疗机构"},
    "col.case": {"en": "review case", "zh": "评估案例"},
    "col.alert": {"en": "alert", "zh": "警报"},
    "col.section": {"en": "section", "zh": "章节"},
    "col.state": {"en": "state", "zh": "状态"},
    "col.outcome": {"en": "outcome", "zh": "结果"},
    "col.by": {"en": "by", "zh": "操作人"},
    "col.at": {"en": "at", "zh": "时间"},
    "col.at_utc": {"en": "at (UTC)", "zh": "时间（UTC）"},
    "col.comment": {"en": "comment", "zh": "备注"},
    "col.kind": {"en": "kind", "zh": "类型"},
    "col.id": {"en": "id", "zh": "编号"},
    "col.entry": {"en": "entry", "zh": "条目"},
    "col.action": {"en": "action", "zh": "操作"},
    "col.record": {"en": "record", "zh": "记录"},
    "col.reason": {"en": "reason", "zh": "原因"},
    "col.entry_hash": {"en": "entry hash", "zh": "条目哈希"},
    "col.suite": {"en": "suite", "zh": "检查套件"},
    "col.expectation": {"en": "expectation", "zh": "检查项"},
    "col.severity": {"en": "severity", "zh": "严重程度"},
    "col.result": {"en": "result", "zh": "结果"},
    "col.observed": {"en": "observed", "zh": "观察值"},
    "col.why": {"en": "why it matters", "zh": "重要性"},
    "col.rule": {"en": "rule", "zh": "规则"},
    "col.jurisdiction": {"en": "jurisdiction", "zh": "辖区"},
    "col.in_force": {"en": "in force", "zh": "有效期"},
    "col.effective_from": {"en": "effective from", "zh": "生效日期"},
    "col.effective_to": {"en": "effective to", "zh": "失效日期"},
    "col.known_from": {"en": "known from", "zh": "获知时间"},
    "col.values": {"en": "values", "zh": "参数值"},
    "col.name": {"en": "name", "zh": "名称"},
    "col.source": {"en": "source", "zh": "来源"},
    "col.key": {"en": "key", "zh": "参数"},
    "col.signed": {"en": "signed", "zh": "签名"},
    "col.family": {"en": "family", "zh": "指标类别"},
    "col.armm": {"en": "aRMM", "zh": "额外风险最小化措施"},
    "col.description": {"en": "description", "zh": "描述"},
    "col.unit": {"en": "unit", "zh": "单位"},
    "col.anchor": {"en": "anchor", "zh": "时间锚点"},
    "col.success": {"en": "success", "zh": "达标条件"},
    "col.window": {"en": "window", "zh": "时间窗"},
    "col.direction": {"en": "direction", "zh": "方向"},
    "col.threshold_default": {"en": "threshold (default)", "zh": "阈值（默认）"},
    "col.min_n": {"en": "min n", "zh": "最小 n"},
    "col.zero_tolerance": {"en": "zero tolerance", "zh": "零容忍"},
    "col.review_section": {"en": "review section", "zh": "评估章节"},
    # --- values written in cells ----------------------------------------------------------------------------
    "yes": {"en": "yes", "zh": "是"},
    "no": {"en": "no", "zh": "否"},
    "all_sites": {"en": "(all sites)", "zh": "（全部医疗机构）"},
    "critical": {"en": "critical", "zh": "关键"},
    "warning_severity": {"en": "warning", "zh": "警告"},
    "passed": {"en": "passed", "zh": "通过"},
    "failed": {"en": "failed", "zh": "未通过"},
    "higher_is_better": {"en": "higher is better", "zh": "越高越好"},
    "lower_is_better": {"en": "lower is better", "zh": "越低越好"},
    "kind.alert": {"en": "alert", "zh": "警报"},
    "kind.case": {"en": "review case", "zh": "评估案例"},
    "outcome_is": {"en": "outcome: {outcome}", "zh": "结果：{outcome}"},
    "not_a_unit": {"en": "not a unit", "zh": "不计入"},
    # --- xlsx sheets ----------------------------------------------------------------------------------------
    "sheet.summary": {"en": "Summary", "zh": "汇总"},
    "sheet.alerts": {"en": "Alerts and reviews", "zh": "警报和评估案例"},
    "sheet.dq": {"en": "Data quality", "zh": "数据质量"},
    "sheet.definitions": {"en": "Definitions", "zh": "指标定义"},
    "sheet.rules": {"en": "Rules", "zh": "规则"},
    "sheet.audit": {"en": "Audit trail", "zh": "审计追踪"},
    "xlsx_title": {"en": "aRMM effectiveness KPIs {quarter}", "zh": "额外风险最小化措施有效性指标 {quarter}"},
    # --- programme summary ----------------------------------------------------------------------------------
    "h_summary": {"en": "Programme summary", "zh": "项目汇总"},
    "summary_counts": {
        "en": "{rows} indicator rows (KPI × product): {counts}. Breach: the whole 95 % confidence interval is on the "
        "wrong side of the threshold; warning: the value is, the interval is not; insufficient data: fewer units "
        "than the KPI's minimum.",
        "zh": "指标行 {rows} 个（指标 × 产品）：{counts}。超限：95% 置信区间整体位于阈值不达标一侧；预警：数值不达标，"
        "但置信区间未整体不达标；数据不足：单位数少于该指标的最小样本量。",
    },
    "count_of": {"en": "{n} {what}", "zh": "{what} {n} 个"},
    # --- KPI sections ---------------------------------------------------------------------------------------
    "kpi_definition": {
        "en": "aRMM: {armm}. {description} Unit: {unit}. Success: {success}. Threshold {threshold} ({direction}"
        "{zero}), minimum n {min_n}.",
        "zh": "额外风险最小化措施：{armm}。{description} 单位：{unit}。达标条件：{success}。阈值 {threshold}"
        "（{direction}{zero}），最小 n {min_n}。",
    },
    "see_definition": {"en": "see definition", "zh": "见定义"},
    "zero_tolerance": {"en": ", zero tolerance", "zh": "，零容忍"},
    "per_site": {
        "en": "Per site: {rows} site rows — {counts}.{spread} {flagged} Every site: kpis.xlsx, sheet {sheet}.",
        "zh": "按医疗机构：{rows} 行 — {counts}。{spread}{flagged}全部医疗机构：kpis.xlsx 工作表 {sheet}。",
    },
    "site_spread": {
        "en": " Site values: median {median}, 10th–90th percentile {p10}–{p90}, range {low}–{high}.",
        "zh": "各医疗机构数值：中位数 {median}，第 10–90 百分位 {p10}–{p90}，范围 {low}–{high}。",
    },
    "sites_flagged": {"en": "Sites in breach or warning, worst first:", "zh": "超限或预警的医疗机构（最差在前）："},
    "sites_none_flagged": {"en": "No site is in breach or warning.", "zh": "无医疗机构超限或预警。"},
    "survey_sample": {"en": "Survey sample: {lines}.", "zh": "问卷样本：{lines}。"},
    "sample_none": {
        "en": "{product}: {n} assessments; no sample size pre-specified",
        "zh": "{product}：评估 {n} 份；未预先设定样本量",
    },
    "sample_reached": {
        "en": "{product}: {n} assessments, pre-specified sample {target} — reached",
        "zh": "{product}：评估 {n} 份，预先设定样本量 {target} — 已达到",
    },
    "sample_not_reached": {
        "en": "{product}: {n} assessments, pre-specified sample {target} — NOT reached",
        "zh": "{product}：评估 {n} 份，预先设定样本量 {target} — 未达到",
    },
    "item_sep": {"en": "; ", "zh": "；"},
    # --- alerts, audit, data quality ------------------------------------------------------------------------
    "h_alerts": {"en": "Alerts and review cases", "zh": "警报和评估案例"},
    "alerts_none": {
        "en": "No alerts or review cases were recorded up to the as-of time.",
        "zh": "截至该时间未记录任何警报或评估案例。",
    },
    "decision_signatures": {
        "en": "Electronic signatures on the decisions (each made with the signer's password, bound to the record it "
        "signs; rmm reviews show / rmm alerts show check them): {list}.",
        "zh": "决定的电子签名（均以签名人的密码生成，并绑定所签记录；rmm reviews show / rmm alerts show 可核验）："
        "{list}。",
    },
    "h_audit": {"en": "Audit trail", "zh": "审计追踪"},
    "audit_intro": {
        "en": "{n} entries of the audit log logged in {quarter} up to the as-of time: every change to an alert, a "
        "review case, a user, a token or a signature, hash-chained and published outside the database (rmm audit "
        "verify checks the chain and every record; rmm audit export writes it all).",
        "zh": "{quarter} 截至该时间记录的审计日志条目 {n} 条：警报、评估案例、用户、令牌或签名的每一次变更，以哈希链"
        "相连并在数据库之外发布（rmm audit verify 核验哈希链和每条记录；rmm audit export 导出全部）。",
    },
    "h_dq": {"en": "Data quality", "zh": "数据质量"},
    "dq_intro": {
        "en": "{n} expectations (Great Expectations suites in expectations/, run over the events of {quarter} known "
        "at the as-of time; references resolved against all known events): {passed} passed, {failed} failed "
        "({critical} critical). A failing critical expectation means some KPI numbers above rest on incomplete or "
        "inconsistent data.",
        "zh": "检查项 {n} 个（expectations/ 中的 Great Expectations 检查套件，针对截至该时间已知的 {quarter} 事件运行；"
        "引用按全部已知事件核对）：通过 {passed} 个，未通过 {failed} 个（其中关键 {critical} 个）。关键检查项未通过"
        "意味着上文部分指标数字所依据的数据不完整或不一致。",
    },
    # --- method notes ---------------------------------------------------------------------------------------
    "h_method": {"en": "Method notes", "zh": "方法说明"},
    "method_units": {
        "en": "Each KPI is numerator / denominator over units (an infusion, an HCP, a CRS episode, an AE ...); a unit "
        "belongs to {quarter} by its anchor time (event time, UTC). Definitions, thresholds and windows come from "
        "the KPI catalog (metrics/*.yml; the definitions sheet of kpis.xlsx lists them in full).",
        "zh": "每个指标为单位（一次输注、一名医务人员、一次细胞因子释放综合征发作、一个不良事件……）上的分子 / 分母；"
        "单位按其时间锚点（事件时间，UTC）归入 {quarter}。定义、阈值和时间窗来自指标目录（metrics/*.yml；"
        "kpis.xlsx 的指标定义工作表列出全部内容）。",
    },
    "method_as_of": {
        "en": "As-of: only events known (recorded) at or before {as_of} are used, and windows are judged at that "
        "time. A unit whose window is still open without an outcome is pending and left out of numerator and "
        "denominator.",
        "zh": "截至时间：仅使用在 {as_of} 或之前已知（已记录）的事件，时间窗按该时间判断。时间窗尚未结束且无结果的单位"
        "为待定，不计入分子和分母。",
    },
    "method_ci": {
        "en": "Confidence intervals: Wilson score, 95 % (z = 1.959964). Status: ok if the value meets the threshold, "
        "warning if only the interval does, breach if the interval misses it; zero-tolerance KPIs breach on any "
        "failure. Duplicate deliveries (same event_id) count once.",
        "zh": "置信区间：Wilson 评分法，95%（z = 1.959964）。状态：数值满足阈值为达标，仅置信区间满足为预警，置信区间"
        "未满足为超限；零容忍指标出现任何未达标即为超限。重复投递（相同 event_id）只计一次。",
    },
    "method_topics": {"en": "Events per topic: {counts}.", "zh": "各主题事件数：{counts}。"},
    "method_files": {
        "en": "Units behind every number (pseudonymous patient, HCP, AE and lot references with the reason of each "
        "outcome) are in units.parquet; the KPI rows in kpis.csv / kpis.parquet; file hashes in manifest.json.",
        "zh": "每个数字背后的单位（假名化的患者、医务人员、不良事件和批号引用，以及每个结果的原因）见 units.parquet；"
        "指标行见 kpis.csv / kpis.parquet；文件哈希见 manifest.json。",
    },
    "method_rules": {
        "en": "Rules by jurisdiction, product and date (metrics/rules/rule_sets.yml): where a requirement differs by "
        "country and changed on a known date, each unit is judged by the version in force for its site's "
        "jurisdiction and its product at its anchor time. A unit the rule in force does not cover (e.g. an infusion "
        "in the US after the REMS ended, a non-serious US adverse event) is excluded: listed in units.parquet with "
        "the rule named, counted in neither numerator nor denominator. Only versions known at {as_of} are used; "
        "those and their sources:",
        "zh": "按辖区、产品和日期的规则（metrics/rules/rule_sets.yml）：要求因国家而异并在已知日期变更时，每个单位按其"
        "医疗机构所在辖区和其产品在其时间锚点有效的版本判断。有效规则不涵盖的单位（如 REMS 结束后在美国的输注、"
        "美国的非严重不良事件）予以排除：在 units.parquet 中列出并注明规则，不计入分子和分母。仅使用在 {as_of} "
        "已知的版本；这些版本及其来源：",
    },
    "jurisdictions": {
        "en": "Jurisdictions: {list}; any other country, or a site with no registration known: default (the CN "
        "values).",
        "zh": "辖区：{list}；其他国家或无已知注册信息的医疗机构：默认（采用中国的数值）。",
    },
    "changes_intro": {
        "en": "Dated changes of thresholds and parameters (metrics/rules/changes.yml), known at the as-of:",
        "zh": "阈值和参数的定期变更（metrics/rules/changes.yml），截至该时间已知：",
    },
    # --- charts ---------------------------------------------------------------------------------------------
    "chart_trend": {"en": "monthly trend (dashed: threshold)", "zh": "月度趋势（虚线：阈值）"},
    "chart_sites": {
        "en": "per site this quarter (95% CI; colour = status; dotted: breach limit)",
        "zh": "本季度各医疗机构（95% 置信区间；颜色 = 状态；点线：超限界）",
    },
    "chart_n": {"en": "units per site (n, log scale)", "zh": "每家医疗机构的单位数（n，对数刻度）"},
    "chart_site_rows": {"en": "{n} site rows: {counts}", "zh": "医疗机构行 {n} 个：{counts}"},
    "chart_no_units": {"en": "no units this quarter", "zh": "本季度无单位"},
    "chart_overview": {
        "en": "All KPIs this quarter: value and 95% CI per product; | = threshold\n"
        "green ok, amber warning, red breach, grey insufficient data",
        "zh": "本季度全部指标：各产品的数值和 95% 置信区间；| = 阈值\n绿色达标，琥珀色预警，红色超限，灰色数据不足",
    },
}


@dataclass(frozen=True)
class Langs:
    """The language(s) of one export, the leading one first: ("en",), ("zh",), ("zh", "en") ..."""

    langs: tuple[str, ...] = (DEFAULT,)

    @property
    def lead(self) -> str:
        return self.langs[0]

    @property
    def bilingual(self) -> bool:
        return len(self.langs) > 1

    @property
    def zh(self) -> bool:
        return "zh" in self.langs

    def each(self, fn: Callable[[str], str]) -> Txt:
        """`fn(lang)` for each language: a str for one, a tuple (leading first) for two."""
        texts = tuple(fn(lang) for lang in self.langs)
        return texts[0] if len(texts) == 1 else texts

    def w(self, key: str, **values: object) -> Txt:
        """A fixed word or sentence of WORDS in each language, `values` (already formatted) filled in."""
        return self.each(lambda lang: say(WORDS, key, lang, **values))

    def one(self, key: str, lang: str, **values: object) -> str:
        return say(WORDS, key, lang, **values)

    def joined(self, fn: Callable[[str], str], sep: str = " / ") -> str:
        """One string with every language's text (chart titles, a sheet cell)."""
        return sep.join(dict.fromkeys(fn(lang) for lang in self.langs))


def texts(txt: Txt) -> tuple[str, ...]:
    return txt if isinstance(txt, tuple) else (txt,)


def flat(txt: Txt, sep: str = " / ") -> str:
    return sep.join(texts(txt))


def alert_title(alert: dict, lang: str) -> str:
    """An alert's title in `lang` as the export's sources carry it (`titles`), else the stored one."""
    return (alert.get("titles") or {}).get(lang) or alert.get("title") or ""
