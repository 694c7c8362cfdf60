"""Items and prompts: read RecBole's `.inter`/`.item` files and fill the paper's prompt (Table 1)."""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# `.item` headers of datasets we know: {clause label: candidate fields, first present wins}, in the
# order of the paper's clauses (name, brand, date, feature, price, rating, description). Field names
# from RecBole's dataset documentation (MovieLens, Amazon 2014/2018, Yelp) and amazon-office.
PRESETS = {
    "movielens": {"name": ["movie_title"], "date": ["release_year"], "genre": ["class", "genre"]},
    "amazon": {
        "name": ["title"], "brand": ["brand"], "feature": ["categories", "feature", "sales_type"],
        "price": ["price"], "rating": ["average_rating", "rating"], "description": ["description"],
    },
    "yelp": {
        "name": ["item_name", "name"], "feature": ["categories"], "rating": ["item_stars", "stars"],
        "description": ["address", "city"],
    },
}


class ItemFileError(ValueError):
    """An `.item`/`.inter` file or a field map that cannot be used."""


@dataclass
class ItemTable:
    """Raw item ids that occur in the interactions, with their metadata fields."""

    ids: list
    fields: dict  # raw id -> {field: text}
    header: list
    path: Path
    missing_metadata: list = field(default_factory=list)  # ids with no .item row
    bad_encoding: list = field(default_factory=list)  # (line number, raw id) decoded with replacement


def _header_names(header_line, path):
    names = [col.split(":")[0] for col in header_line.rstrip("\r\n").split("\t")]
    if not names or not all(names):
        raise ItemFileError(f"{path}: the header {header_line.strip()!r} is not a RecBole atomic header (name:type<TAB>...)")
    return names


def inter_header(inter_path):
    """Field names in the header of an `.inter` file."""
    with open(inter_path, "rb") as f:
        return _header_names(f.readline().decode("utf-8", "replace"), inter_path)


def interacted_item_ids(inter_path, item_id_field):
    """Raw item ids in the `.inter` file, in first-seen order."""
    path = Path(inter_path)
    if not path.is_file():
        raise ItemFileError(f"{path} does not exist: the archetype preprocessor writes vectors only for items that "
                            f"occur in the interactions, so it needs the dataset's .inter file.")
    with open(path, "rb") as f:
        names = _header_names(f.readline().decode("utf-8", "replace"), path)
        if item_id_field not in names:
            raise ItemFileError(f"{path} has no field {item_id_field!r}; its fields are {names} (set item_id_field).")
        col = names.index(item_id_field)
        seen = {}
        for raw in f:
            parts = raw.decode("utf-8", "replace").rstrip("\r\n").split("\t")
            if len(parts) > col and parts[col]:
                seen.setdefault(parts[col], None)
    return list(seen)


def read_item_rows(path, item_id_field, wanted=None):
    """(field names, {raw id: {field: text}} in file order, [(line number, raw id) decoded with replacement])
    of an `.item` file; `wanted`: keep only these ids."""
    fields, bad = {}, []
    with open(path, "rb") as f:
        header = _header_names(f.readline().decode("utf-8", "replace"), path)
        if item_id_field not in header:
            raise ItemFileError(f"{path} has no field {item_id_field!r}; its fields are {header} (set item_id_field).")
        col = header.index(item_id_field)
        for line_no, raw in enumerate(f, start=2):
            try:
                line = raw.decode("utf-8")
                replaced = False
            except UnicodeDecodeError:
                line = raw.decode("utf-8", "replace")
                replaced = True
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) <= col or not parts[col] or (wanted is not None and parts[col] not in wanted):
                continue
            if replaced:
                bad.append((line_no, parts[col]))
            fields[parts[col]] = dict(zip(header, parts))
    return header, fields, bad


def read_items(data_path, dataset, item_id_field="item_id"):
    data_path = Path(data_path)
    ids = interacted_item_ids(data_path / f"{dataset}.inter", item_id_field)
    path = data_path / f"{dataset}.item"
    if not path.is_file():
        raise ItemFileError(f"{path} does not exist: the prompts are built from the item metadata in the dataset's "
                            f".item file (RecBole atomic format, e.g. item_id:token<TAB>title:token_seq).")
    header, fields, bad = read_item_rows(path, item_id_field, wanted=set(ids))
    missing = [i for i in ids if i not in fields]
    return ItemTable(ids=ids, fields=fields, header=header, path=path, missing_metadata=missing, bad_encoding=bad)


def preset_field_map(header):
    """(preset name, {clause label: field}) for a known header; the name clause's field must be present."""
    for name, preset in PRESETS.items():
        field_map = {}
        for label, candidates in preset.items():
            present = next((f for f in candidates if f in header), None)
            if present is not None:
                field_map[label] = present
        if "name" in field_map and len(field_map) >= 2:
            return name, field_map
    return None, None


def resolve_field_map(settings, table):
    """The {clause label: field} map: from the settings, else a preset recognised from the header."""
    field_map = settings.get("prompt_fields")
    if field_map is not None and not isinstance(field_map, dict):
        raise ItemFileError(f"prompt_fields={field_map!r} is not a mapping; write it as {{name: <title field>, "
                            f"description: <text field>}} (on the command line: --prompt_fields='{{name: title}}').")
    if field_map is None:
        _, field_map = preset_field_map(table.header)
    if field_map is None:
        raise ItemFileError(
            f"{table.path}: no preset knows the fields {table.header}; set prompt_fields in YAML, e.g. "
            f"prompt_fields: {{name: <title field>, description: <text field>}}."
        )
    unknown = [f for f in field_map.values() if f not in table.header]
    if unknown:
        raise ItemFileError(f"{table.path} has no field(s) {unknown} named in prompt_fields; its fields are {table.header}.")
    return dict(field_map)


def prompt_clauses(values, field_map, settings):
    """One clause per non-empty field (cut to max_field_chars), in the order of `field_map` (paper Table 1)."""
    limit = settings["max_field_chars"]
    # a value must not split a clause list joined by "; " (the authors' code writes its ";" as ".")
    semicolons = ";" in settings.get("prompt_clause_separator", " ")
    clauses = []
    for label, name in field_map.items():
        value = " ".join(str(values.get(name, "") or "").split())
        if semicolons:
            value = value.replace(";", ".")
        if not value:
            continue
        if limit and len(value) > limit:
            value = value[:limit].rstrip()
        template = settings["prompt_name_clause"] if label == "name" else settings["prompt_clause"]
        clauses.append(template.format(label=label, value=value))
    return clauses


def join_prompt(clauses, settings):
    """intro, the clauses joined by `prompt_clause_separator`, question, joined by `prompt_join` (both " " by default;
    settings stored before the keys existed read as that)."""
    separator, join = settings.get("prompt_clause_separator", " "), settings.get("prompt_join", " ")
    parts = [settings["prompt_intro"], separator.join(clauses)] if clauses else [settings["prompt_intro"]]
    return join.join([*parts, settings["prompt_question"]])


def build_prompt(values, field_map, settings):
    """Paper Table 1: intro, one clause per non-empty field (cut to max_field_chars), question."""
    clauses = prompt_clauses(values, field_map, settings)
    return join_prompt(clauses, settings), len(clauses)


def identical_groups(texts):
    """Groups of two or more ids whose texts are equal, from {id: text}, in the order of `texts`."""
    groups = {}
    for item, text in texts.items():
        groups.setdefault(text, []).append(item)
    return [group for group in groups.values() if len(group) > 1]


def distinguishing_field(settings, table):
    """The `.item` field whose value tells look-alike items apart; `item_id` = the raw id; None = keep them."""
    choice = settings.get("distinguish_duplicates")
    if choice is None or choice == "item_id":
        return choice
    if not isinstance(choice, str) or choice not in table.header:
        raise ItemFileError(
            f"distinguish_duplicates={choice!r}: {table.path} has no such field; its fields are {table.header}. "
            f"Use item_id, one of these fields, or ~ to keep identical prompts."
        )
    return choice


def distinguish(groups, clauses, table, field_map, settings, choice):
    """Prompts for the items of `groups` with one more clause each: the `choice` field, else the item id.

    Only these items change, so the prompts (and finished work) of every other item stay as they are.
    """
    label = next((lab for lab, name in field_map.items() if name == choice), choice)
    prompts = {}
    for group in groups:
        by_field = {}
        if choice != "item_id":
            for item in group:
                extra = prompt_clauses(table.fields.get(item, {}), {label: choice}, settings)
                by_field[item] = join_prompt(clauses[item] + extra, settings) if extra else None
        still_alike = Counter(by_field.values())
        for item in group:
            if by_field.get(item) is not None and still_alike[by_field[item]] == 1:
                prompts[item] = by_field[item]
            else:  # the field is empty or shared inside the group: the id tells them apart
                extra = settings["prompt_clause"].format(label="id", value=item)
                prompts[item] = join_prompt(clauses[item] + [extra], settings)
    return prompts
