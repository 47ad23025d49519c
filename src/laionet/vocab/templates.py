"""The seven query templates of the original system (spec §3.1), as plain format strings."""

QUERY_TEMPLATES: dict[str, str] = {
    "name": "{name}",
    "name_def": "{name} which is {definition}",
    "lemmas": "{lemmas}",
    "a_photo_of_name": "a photo of {name}",
    "a_photo_of_name_def": "a photo of {name} which is {definition}",
    "a_clear_photo_of_name_def": "a clear photo of {name} which is {definition}",
    "a_photo_of_lemmas": "a photo of {lemmas}",
}
DEFAULT_QUERY = "name_def"


def render(template: str, name: str, definition: str, lemmas: list[str]) -> str:
    joined = " or ".join(lemma.replace("_", " ") for lemma in lemmas)
    return QUERY_TEMPLATES[template].format(name=name, definition=definition, lemmas=joined)
