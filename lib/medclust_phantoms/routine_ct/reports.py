"""Free-text radiology reports of the routine chest CT phantom: phrase tables (positive phrases,
negations, normal statements, impressions) and :func:`compose_report`, which writes a patient's
report from its true findings and what the image shows of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medclust_phantoms.routine_ct.anatomy import LOBES
from medclust_phantoms.routine_ct.patient import PatientPlan, _pick, case_streams
from medclust_phantoms.routine_ct.population import DEFAULTS, FINDINGS, RENDERED_FINDINGS

# Phrase tables. Positive phrases are sentence bodies (capitalised when used); fields:
# {sev} severity word, {side} laterality, {lobe} lobe name, {d} size (mm), {where}
# distribution, {n} number.
_SEVERITY = {
    "default": ("mild", "moderate", "severe"),
    "pleural_effusion": ("small", "moderate", "large"),
    "ground_glass": ("faint", "patchy", "extensive"),
    "cardiomegaly": ("mild", "moderate", "marked"),
    "hiatal_hernia": ("small", "moderate", "large"),
}
_POSITIVE: dict[str, tuple[str, ...]] = {
    "emphysema": (
        "{sev} centrilobular emphysema with upper lobe predominance",
        "{sev} upper-lobe predominant emphysema",
        "emphysematous changes in both upper lobes",
        "{sev} paraseptal and centrilobular emphysema",
        "there is {sev} emphysema, most pronounced in the upper lobes",
    ),
    "pleural_effusion": (
        "{sev} {side} pleural effusion",
        "{sev} {side_adj} pleural effusion",
        "{sev} amount of {side} pleural fluid",
        "there is a {sev} {side} effusion",
        "{sev} {side} pleural effusion with adjacent compressive changes",
    ),
    "consolidation": (
        "consolidation in the {lobe}{bronchogram}",
        "airspace consolidation in the {lobe}{bronchogram}",
        "patchy consolidation of the {lobe}",
        "dense consolidation involving the {lobe}{bronchogram}",
        "focal airspace consolidation in the {lobe}",
    ),
    "fibrosis": (
        "subpleural reticulation with basal predominance",
        "{sev} fibrotic changes in both lower lobes",
        "basal subpleural honeycombing",
        "peripheral reticular opacities and traction bronchiectasis at the lung bases",
        "honeycombing and reticulation in the subpleural lower lobes",
    ),
    "ground_glass": (
        "{sev} ground-glass opacities {where}",
        "{sev} GGO {where}",
        "areas of ground-glass attenuation {where}",
        "{sev} ground glass opacification {where}",
    ),
    "cardiomegaly": (
        "cardiomegaly",
        "{sev} cardiomegaly",
        "the heart is enlarged",
        "enlarged cardiac silhouette",
        "the cardiac silhouette is enlarged",
    ),
    "atelectasis": (
        "{basal} subsegmental atelectasis",
        "linear atelectasis at the {base}",
        "plate-like atelectasis {at_base}",
        "dependent atelectasis {at_base}",
    ),
    "lymphadenopathy": (
        "enlarged mediastinal lymph nodes up to {n} mm in short axis",
        "mediastinal and hilar lymphadenopathy",
        "subcarinal adenopathy measuring {n} mm",
        "{sev} mediastinal lymphadenopathy",
    ),
    "hiatal_hernia": (
        "{sev} hiatal hernia",
        "a hiatus hernia is noted",
        "{sev} sliding hiatal hernia",
        "hiatal hernia",
    ),
    "atherosclerosis": (
        "atherosclerotic calcifications of the thoracic aorta",
        "aortic atherosclerosis",
        "coronary artery calcifications",
        "calcified atherosclerotic plaque in the aortic arch",
        "{sev} atherosclerosis of the aorta and coronary arteries",
    ),
}
_NODULE_ONE = (
    "a {d} mm solid nodule in the {lobe}",
    "{lobe} pulmonary nodule measuring {d} mm",
    "there is a {d} mm nodule in the {lobe}",
    "a {d} mm nodular opacity in the {lobe}",
)
_NODULE_LARGE = (
    "a spiculated {d} mm nodule in the {lobe}, suspicious for malignancy",
    "irregular {d} mm nodule in the {lobe}",
)
_NODULE_MANY = (
    "multiple pulmonary nodules, the largest measuring {d} mm in the {lobe}",
    "{n} pulmonary nodules, the largest {d} mm in the {lobe}",
)
_WHERE = {
    "diffuse": ("in both lungs", "scattered bilaterally", "throughout both lungs"),
    "basal": ("in the lower lobes", "at the lung bases", "with basal predominance"),
    "perihilar": ("in a perihilar distribution", "in the central lung zones"),
    "dependent": ("in the dependent lung", "in the posterior lung zones"),
}
# noun phrases for negation; the first is the plain term
_NEGATABLE: dict[str, tuple[str, ...]] = {
    "emphysema": ("emphysema",),
    "nodule": ("suspicious pulmonary nodules", "pulmonary nodules", "nodules"),
    "pleural_effusion": ("pleural effusion", "pleural fluid", "effusion"),
    "consolidation": ("consolidation", "focal consolidation", "airspace consolidation"),
    "fibrosis": ("fibrotic changes", "honeycombing", "reticulation"),
    "ground_glass": ("ground-glass opacities", "GGO"),
    "cardiomegaly": ("cardiomegaly",),
    "atelectasis": ("atelectasis",),
    "lymphadenopathy": (
        "lymphadenopathy",
        "enlarged lymph nodes",
        "mediastinal lymphadenopathy",
    ),
    "hiatal_hernia": ("hiatal hernia",),
    "atherosclerosis": ("coronary artery calcification", "significant atherosclerosis"),
}
# how often an absent finding is explicitly negated (pertinent negatives)
_NEGATE_PROBABILITY = {
    "emphysema": 0.2,
    "nodule": 0.4,
    "pleural_effusion": 0.6,
    "consolidation": 0.5,
    "fibrosis": 0.12,
    "ground_glass": 0.15,
    "cardiomegaly": 0.3,
    "atelectasis": 0.1,
    "lymphadenopathy": 0.5,
    "hiatal_hernia": 0.05,
    "atherosclerosis": 0.05,
}
_DISTRACTORS = {"lungs": "pneumothorax", "pleura": "pneumothorax", "heart": "pericardial effusion"}
_NEGATION_FORMS = (
    "No {x}.",
    "There is no evidence of {x}.",
    "No evidence of {x}.",
    "Negative for {x}.",
    "There is no {x}.",  # singular nouns only (see compose_report)
)
_SECTION_OF = {
    "emphysema": "lungs",
    "nodule": "lungs",
    "consolidation": "lungs",
    "fibrosis": "lungs",
    "ground_glass": "lungs",
    "atelectasis": "lungs",
    "pleural_effusion": "pleura",
    "cardiomegaly": "heart",
    "lymphadenopathy": "heart",
    "atherosclerosis": "heart",
    "hiatal_hernia": "abdomen",
}
_SECTIONS = (
    ("lungs", "Lungs and airways"),
    ("pleura", "Pleura"),
    ("heart", "Heart and mediastinum"),
    ("abdomen", "Upper abdomen"),
    ("bones", "Bones and soft tissues"),
)
_NORMAL = {
    "lungs": ("The lungs are clear.", "No acute pulmonary abnormality."),
    "airways": ("The central airways are patent.", "The trachea and main bronchi are patent."),
    "pleura": ("The pleural spaces are clear.", "Unremarkable pleura."),
    "heart": ("Heart size is normal.", "The heart and great vessels are normal in caliber."),
    "abdomen": (
        "The visualized upper abdomen is unremarkable.",
        "Limited views of the upper abdomen are unremarkable.",
    ),
    "bones": (
        "No acute osseous abnormality.",
        "Mild degenerative changes of the thoracic spine.",
        "No suspicious osseous lesions.",
    ),
}
_IMPRESSION_ORDER = (
    "nodule",
    "consolidation",
    "pleural_effusion",
    "cardiomegaly",
    "fibrosis",
    "emphysema",
    "ground_glass",
    "lymphadenopathy",
    "atelectasis",
    "hiatal_hernia",
    "atherosclerosis",
)
_IMPRESSION_SHORT: dict[str, tuple[str, ...]] = {
    "emphysema": ("Emphysema", "{sev} emphysema"),
    "nodule": ("{lobe} nodule ({d} mm); follow-up recommended", "Pulmonary nodule, {d} mm"),
    "pleural_effusion": ("{sev} {side} pleural effusion", "Pleural effusion"),
    "consolidation": ("{lobe} consolidation", "Airspace consolidation in the {lobe}"),
    "fibrosis": ("Basal subpleural fibrosis", "Pulmonary fibrosis"),
    "ground_glass": ("Ground-glass opacities", "GGO"),
    "cardiomegaly": ("Cardiomegaly", "Enlarged heart"),
    "atelectasis": ("{basal} atelectasis", "Atelectasis at the {base}"),
    "lymphadenopathy": ("Mediastinal lymphadenopathy", "Enlarged mediastinal lymph nodes"),
    "hiatal_hernia": ("Hiatal hernia",),
    "atherosclerosis": ("Aortic and coronary atherosclerosis", "Atherosclerosis"),
}
# interpretation an impression may add for the phenotype's key finding (no vocabulary terms)
_INTERPRETATION = {
    ("pneumonia", "consolidation"): ", compatible with pneumonia",
    ("heart_failure", "pleural_effusion"): ", suggestive of congestive heart failure",
    ("heart_failure", "cardiomegaly"): ", in keeping with known heart disease",
    ("fibrotic_ild", "fibrosis"): ", in keeping with fibrotic interstitial lung disease",
    ("lung_cancer", "nodule"): ", suspicious for primary lung malignancy",
    ("copd", "emphysema"): ", consistent with COPD",
}
_HISTORY = {
    "generic": (
        "Chest pain.",
        "Routine follow-up.",
        "Preoperative evaluation.",
        "Cough.",
        "Shortness of breath.",
    ),
    "normal": ("Chest pain, no prior history.", "Trauma.", "Abnormal laboratory values."),
    "copd": ("Chronic cough, smoker.", "Dyspnea on exertion.", "Smoker, 40 pack-years."),
    "heart_failure": ("Worsening dyspnea and peripheral edema.", "Orthopnea."),
    "pneumonia": ("Fever and productive cough.", "Elevated inflammatory markers, cough."),
    "fibrotic_ild": ("Progressive dyspnea, dry cough.", "Velcro crackles on auscultation."),
    "lung_cancer": ("Weight loss and hemoptysis.", "Staging.", "Abnormal chest radiograph."),
}
_EXAMINATION = (
    "CT of the chest without intravenous contrast.",
    "Contrast-enhanced CT of the chest.",
    "Low-dose CT of the thorax.",
    "CT thorax with multiplanar reconstructions.",
)
_LIMITED = {
    "upper": (
        "Limited examination covering the upper chest.",
        "Images through the upper thorax only.",
    ),
    "lower": (
        "Limited examination through the lung bases and upper abdomen.",
        "Images through the lower chest only.",
    ),
}
_OUTSIDE_FOV = (
    "known {phrase} from prior imaging, outside the field of view of this limited study",
    "{phrase} as previously reported, outside the current field of view",
)


def _severity_word(name: str, severity: float) -> str:
    words = _SEVERITY.get(name, _SEVERITY["default"])
    return words[0 if severity < 0.4 else 1 if severity < 0.75 else 2]


def _join(items: Sequence[str], rng: np.random.Generator) -> str:
    if len(items) == 1:
        return items[0]
    comma = "," if rng.random() < 0.5 and len(items) > 2 else ""
    return ", ".join(items[:-1]) + f"{comma} or {items[-1]}"


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fields(rng: np.random.Generator, name: str, plan: PatientPlan, lobes: Sequence[str]) -> dict:
    """Values of the phrase-table fields for a present finding."""
    d = plan.details[name]
    side = d.get("side", "right")
    fields = {
        "sev": _severity_word(name, d["severity"]),
        "side": side,
        "side_adj": "bilateral" if side == "bilateral" else f"{side}-sided",
        "lobe": LOBES.get(d.get("lobe", "RLL"), "right lower lobe"),
        "bronchogram": " with air bronchograms" if d.get("air_bronchogram") else "",
        "where": _pick(rng, _WHERE[d.get("distribution", "diffuse")]),
        "n": d.get("size_mm", 12),
        "basal": "bibasilar" if side == "bilateral" else f"{side} basilar",
        "base": "lung bases" if side == "bilateral" else f"{side} lung base",
        "at_base": "in both lower lobes" if side == "bilateral" else f"in the {side} lower lobe",
    }
    if name == "nodule":
        k = int(np.argmax(d["diameters"]))
        fields["lobe"] = LOBES[(lobes or d["lobes"])[k]]
        fields["d"] = int(round(d["diameters"][k]))
        fields["n"] = len(d["diameters"])
    return fields


def _plural_effusion(name: str, side: str, phrase: str) -> str:
    if name == "pleural_effusion" and side == "bilateral":
        return phrase.replace("pleural effusion", "pleural effusions")
    return phrase


def _positive_phrase(
    rng: np.random.Generator, name: str, plan: PatientPlan, lobes: Sequence[str]
) -> str:
    """One positive description of a present finding (no trailing period)."""
    fields = _fields(rng, name, plan, lobes)
    if name == "nodule":
        if fields["n"] > 1 and rng.random() < 0.6:
            return _pick(rng, _NODULE_MANY).format(**fields)
        table = _NODULE_LARGE + _NODULE_ONE if fields["d"] >= 15 else _NODULE_ONE
        return _pick(rng, table).format(**fields)
    phrase = _pick(rng, _POSITIVE[name]).format(**fields)
    return _plural_effusion(name, fields["side"], phrase)


def _impression_item(rng: np.random.Generator, name: str, plan: PatientPlan, lobes) -> str:
    fields = _fields(rng, name, plan, lobes)
    text = _pick(rng, _IMPRESSION_SHORT[name]).format(**fields)
    text = _capitalise(_plural_effusion(name, fields["side"], text))
    key = (plan.phenotype, name)
    if key in _INTERPRETATION and rng.random() < 0.4:
        text = text.split(";")[0] + _INTERPRETATION[key]
    return text


def compose_report(
    plan: PatientPlan,
    visible: Mapping[str, bool],
    nodule_lobes: Sequence[str] = (),
    miss_rate: float = DEFAULTS["miss_rate"],
) -> tuple[str, frozenset[str]]:
    """Free-text radiology report of a patient and the findings it mentions positively.

    Present findings are mentioned with probability ``1 - miss_rate`` when visible or not
    rendered, and with probability 0.5 when rendered but outside the field of view (then half
    the time as a known finding outside it). Absent findings are negated with the
    per-finding rates of ``_NEGATE_PROBABILITY``; nothing present is ever negated.
    """
    rng = case_streams(plan.seed, plan.index, plan.stream_tag)["report"]
    mentioned: set[str] = set()
    by_section: dict[str, list[str]] = {key: [] for key, _ in _SECTIONS}
    negated: dict[str, list[str]] = {key: [] for key, _ in _SECTIONS}
    for name in FINDINGS:
        section = _SECTION_OF[name]
        if name in plan.present:
            rendered = name in RENDERED_FINDINGS
            outside = rendered and not visible.get(name, False)
            p_mention = 0.5 if outside else 1.0 - miss_rate
            if rng.random() >= p_mention:
                continue  # missed (or not reported)
            phrase = _positive_phrase(rng, name, plan, nodule_lobes)
            if outside and rng.random() < 0.5:
                phrase = _pick(rng, _OUTSIDE_FOV).format(phrase=phrase)
            if rng.random() < 0.08 and name in ("consolidation", "atelectasis"):
                phrase = _pick(rng, ("probable ", "likely ")) + phrase
            by_section[section].append(_capitalise(phrase) + ".")
            mentioned.add(name)
        elif rng.random() < _NEGATE_PROBABILITY[name]:
            negated[section].append(_pick(rng, _NEGATABLE[name]))

    paragraphs = []
    for key, title in _SECTIONS:
        sentences = list(by_section[key])
        nouns = list(negated[key])
        if key in _DISTRACTORS and rng.random() < 0.35:
            nouns.append(_DISTRACTORS[key])
        if nouns:
            attach = sentences and " with" not in sentences[-1] and rng.random() < 0.3
            if attach:  # the negation follows a positive finding: "... without X."
                sentences[-1] = sentences[-1][:-1] + f" without {_join(nouns, rng)}."
            else:
                forms = _NEGATION_FORMS if not nouns[0].endswith("s") else _NEGATION_FORMS[:-1]
                sentences.append(_pick(rng, forms).format(x=_join(nouns, rng)))
        # normal statements only where they are true (no finding of the section present)
        section_clear = not any(_SECTION_OF[f] == key for f in plan.present)
        in_view = not (key == "abdomen" and plan.fov == "upper")
        if section_clear and in_view and (key == "lungs" or rng.random() < 0.6):
            sentences.insert(0, _pick(rng, _NORMAL[key]))
        if key == "lungs" and rng.random() < 0.5:
            sentences.append(_pick(rng, _NORMAL["airways"]))
        if sentences:
            paragraphs.append((title, " ".join(sentences)))

    structured = rng.random() < 0.6
    history_pool = _HISTORY[plan.phenotype] if rng.random() < 0.6 else _HISTORY["generic"]
    exam = _pick(rng, _EXAMINATION)
    if plan.fov != "full":
        exam += " " + _pick(rng, _LIMITED[plan.fov])
    lines = [f"EXAMINATION: {exam}", f"CLINICAL HISTORY: {_pick(rng, history_pool)}"]
    if rng.random() < 0.7:
        months = int(rng.integers(2, 25))
        comparison = "None." if rng.random() < 0.5 else f"CT from {months} months prior."
        lines.append(f"COMPARISON: {comparison}")
    lines += ["", "FINDINGS:"]
    if structured:
        lines += [f"{title}: {text}" for title, text in paragraphs]
    else:
        lines.append(" ".join(text for _, text in paragraphs))
    lines += ["", "IMPRESSION:"]
    key_findings = [f for f in _IMPRESSION_ORDER if f in mentioned][:4]
    if key_findings:
        items = [_impression_item(rng, f, plan, nodule_lobes) + "." for f in key_findings]
        lines += [f"{k + 1}. {item}" for k, item in enumerate(items)]
    else:
        lines.append(
            _pick(
                rng,
                (
                    "No acute cardiopulmonary abnormality.",
                    "Normal CT of the chest.",
                    "No significant abnormality.",
                ),
            )
        )
    return "\n".join(lines) + "\n", frozenset(mentioned)
