"""Write the sample corpora: tinyrnn/corpora/harbour.txt (the bundled default) and samples/corpora/*.txt.

All text here is original: a small hand-written grammar of a harbour town (English prose and verse)
and of landscapes and seasons (Chinese), expanded with a seeded random generator. Running this
script again reproduces the same files byte for byte.

    python samples/make_corpora.py
"""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# ----------------------------------------------------------------------------- English: a harbour town

NAMES = ["Maren", "Tobias", "old Hessel", "the widow Arn", "Ilse", "Jory", "the harbour master", "Annet",
         "the ferryman", "Pieter", "the baker's girl", "Wend", "Captain Rook", "the lamp keeper", "Dorrit"]
TOWN = ["Saltmere", "the lower quay", "the fish market", "the chapel on the hill", "the net sheds",
        "the long breakwater", "the ropewalk", "the harbour", "the dunes", "the old customs house"]
THINGS = ["lantern", "net", "boat", "letter", "bell", "gull", "anchor", "tide", "storm", "door", "window",
          "ledger", "compass", "kettle", "rope", "sail", "oar", "shell", "coat", "key", "song", "candle"]
ADJ = ["grey", "quiet", "salt-stained", "heavy", "bright", "narrow", "cold", "patient", "broken", "small",
       "green", "old", "restless", "warm", "tired", "silver", "crooked", "wet", "careful", "empty"]
ADV = ["slowly", "without a word", "at last", "once more", "in the dark", "before dawn", "all evening",
       "as the tide turned", "when the rain stopped", "for a long while", "quietly", "against the wind"]
TIMES = ["In the morning", "That night", "Before the boats came in", "At noon", "Late in the autumn",
         "On the first day of spring", "When the fog lifted", "After supper", "In the week of storms",
         "Long before the lamp was lit", "At the turn of the tide", "By the time the bell rang"]
VT = ["mended", "carried", "found", "lost", "painted", "watched", "opened", "counted", "folded", "lifted",
      "buried", "forgot", "polished", "hid", "tied", "wrote", "sold", "bought", "carved", "swept"]
VI = ["waited", "sang", "listened", "walked down to the water", "slept", "laughed", "wept", "worked",
      "stood at the window", "climbed the hill", "sat by the fire", "rowed out past the rocks"]
PLACES = ["on the quay", "in the net shed", "by the harbour wall", "under the lamp", "at the end of the pier",
          "behind the chapel", "in the cellar", "on the beach", "beside the ropewalk", "in the market"]
FEELINGS = ["nothing lasts", "the sea keeps what it takes", "every tide comes back", "the light must be kept",
            "we are only visitors here", "a boat is only as good as its rope", "the wind has no memory",
            "patience is a kind of courage", "the town would be fine", "the winter would be long"]
QUOTES = ["Bring the lantern", "Mind the step, it is slippery", "The wind is turning", "Have you seen my key",
          "We will go out tomorrow", "Leave the door open", "Nobody rows in weather like this",
          "Tell your mother I said so", "The fish are deep this year", "Listen to the bell",
          "There is bread on the table", "I saw a light out past the rocks", "Sit down and get warm"]
TITLES = ["The Lamp Keeper", "Salt and Rope", "The Week of Storms", "A Letter from the North", "Low Tide",
          "The Ferryman's Song", "Fog", "The Crooked Key", "What the Gulls Saw", "Winter Nets",
          "The Bell Under the Water", "Market Day", "The Long Breakwater", "Candles", "Spring Tide"]


def cap(s):
    return s[0].upper() + s[1:]


def english_sentence(r):
    kind = r.randrange(10)
    name, name2 = r.sample(NAMES, 2)
    thing, thing2 = r.sample(THINGS, 2)
    adj, adj2 = r.sample(ADJ, 2)
    if kind == 0:
        return f"{r.choice(TIMES)}, {name} {r.choice(VT)} the {adj} {thing} {r.choice(PLACES)}."
    if kind == 1:
        return cap(f"{name} {r.choice(VI)} {r.choice(ADV)}, and {name2} {r.choice(VI)} {r.choice(PLACES)}.")
    if kind == 2:
        return f"\"{r.choice(QUOTES)},\" said {name}. \"{r.choice(QUOTES)}.\""
    if kind == 3:
        return (f"The {thing} was {adj} that year, and nobody in {r.choice(TOWN)} could remember "
                f"a time when it had been {adj2}.")
    if kind == 4:
        return cap(f"{name} believed that {r.choice(FEELINGS)}, but {name2} said that {r.choice(FEELINGS)}.")
    if kind == 5:
        return cap(f"there was a {adj} {thing} {r.choice(PLACES)}, and beside it a {adj2} {thing2}.")
    if kind == 6:
        return f"{r.choice(TIMES)}, the gulls came down over {r.choice(TOWN)} and {name} {r.choice(VI)}."
    if kind == 7:
        return cap(f"{name} {r.choice(VT)} the {thing} and {r.choice(VT)} the {thing2}, "
                   f"and then {r.choice(VI)} {r.choice(ADV)}.")
    if kind == 8:
        return f"Nobody asked {name} about the {thing}; it was understood that {r.choice(FEELINGS)}."
    return cap(f"{name} asked {name2} for the {adj} {thing}, and {name2} gave it {r.choice(ADV)}.")


def english_verse(r):
    lines = []
    for _ in range(r.choice([2, 3])):
        thing, thing2 = r.sample(THINGS, 2)
        adj, adj2 = r.sample(ADJ, 2)
        lines += [f"The {adj} {thing} {r.choice(['is', 'was', 'will be'])} {adj2} {r.choice(PLACES)},",
                  f"and {r.choice(NAMES)} {r.choice(VI)} {r.choice(ADV)};",
                  f"{cap(r.choice(FEELINGS))}, {r.choice(['the gulls say', 'the old ones say', 'says the bell', 'I was told'])},",
                  f"{r.choice(['so', 'and', 'but'])} the {thing2} {r.choice(['waits', 'sleeps', 'turns', 'burns'])} "
                  f"{r.choice(['till morning', 'in the rain', 'by the sea', 'for us all'])}.", ""]
    return "\n".join(lines)


def harbour(n_chapters=100):
    r = random.Random(1871)
    parts = []
    for k in range(1, n_chapters + 1):
        parts.append(f"CHAPTER {k}. {r.choice(TITLES)}\n")
        for _ in range(r.randint(4, 7)):
            parts.append(" ".join(english_sentence(r) for _ in range(r.randint(3, 6))) + "\n")
        parts.append(english_verse(r))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- Chinese: seasons and landscapes

ZH_TIME = ["春天", "夏天", "秋天", "冬天", "清晨", "傍晚", "深夜", "雨后", "雪后", "中午"]
ZH_PLACE = ["山上", "河边", "湖上", "村口", "城外", "桥下", "窗前", "院子里", "林中", "海边"]
ZH_THING = ["月亮", "小船", "老树", "白云", "细雨", "花", "灯", "风", "鸟", "溪水", "钟声", "炊烟"]
ZH_ADJ = ["安静", "明亮", "寒冷", "温暖", "遥远", "清澈", "古老", "轻轻", "慢慢", "高高"]
ZH_PERSON = ["老人", "孩子", "渔夫", "母亲", "旅人", "学生", "农夫", "姐姐", "我", "他们"]
ZH_VERB = ["看着", "听着", "想着", "等着", "走过", "唱着", "写下", "记得"]
ZH_FEEL = ["心里很平静", "想起了故乡", "不说一句话", "慢慢地笑了", "觉得日子很长", "忘了时间"]
ZH_POEM5 = ["明月照高楼", "春风过小桥", "白云生远山", "细雨落空庭", "孤舟在江上", "鸟声满林间",
            "秋水共长天", "灯火照归人", "寒梅开雪中", "清溪绕古村", "夜静闻钟声", "山高月自小"]


def chinese_sentence(r):
    kind = r.randrange(5)
    t, p, th, a, who, v, f = (r.choice(ZH_TIME), r.choice(ZH_PLACE), r.choice(ZH_THING), r.choice(ZH_ADJ),
                               r.choice(ZH_PERSON), r.choice(ZH_VERB), r.choice(ZH_FEEL))
    if kind == 0:
        return f"{t}，{who}在{p}{v}{th}，{f}。"
    if kind == 1:
        return f"{p}的{th}很{a}，{who}说：“{t}的{r.choice(ZH_THING)}也是这样。”"
    if kind == 2:
        return f"{who}{v}{a}的{th}，一直到{r.choice(ZH_TIME)}。"
    if kind == 3:
        return f"{t}的时候，{th}从{p}来，{who}{f}。"
    return f"{who}问：“{p}还有{th}吗？”{r.choice(ZH_PERSON)}{f}。"


def chinese(n_paragraphs=160):
    r = random.Random(618)
    parts = []
    for k in range(n_paragraphs):
        if k % 8 == 7:
            lines = r.sample(ZH_POEM5, 4)
            parts.append(f"{lines[0]}，{lines[1]}。\n{lines[2]}，{lines[3]}。")
        else:
            parts.append("".join(chinese_sentence(r) for _ in range(r.randint(3, 6))))
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- accents and emoji: a travel log

LOG_PLACES = ["São Brás", "Évora", "Cádiz", "Århus", "Kraków", "Zürich", "Besançon", "Tórshavn", "Ljubljana"]
LOG_FOOD = ["crème brûlée", "pão de queijo", "smørrebrød", "pierogi", "rösti", "jamón", "crêpes", "café au lait"]
LOG_MOOD = ["🙂", "🌧️", "☀️", "🚲", "🍞", "⛵", "🎶", "✨"]


def travel_log(n_days=120):
    r = random.Random(42)
    lines = []
    for day in range(1, n_days + 1):
        place, food, mood = r.choice(LOG_PLACES), r.choice(LOG_FOOD), r.choice(LOG_MOOD)
        km = r.randint(12, 140)
        lines.append(f"Day {day} — {place} {mood}\n"
                     f"Rode {km} km. Ate {food} at a café near the station; the señora said it was "
                     f"{r.choice(['the best in town', 'her grandmother’s recipe', 'too late for soup', 'naïve to ask'])}. "
                     f"{r.choice(['Rain all afternoon.', 'Sun until six.', 'Wind from the north, über cold.', 'A quiet day.'])}\n")
    return "\n".join(lines)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"{path}: {len(text)} characters, {len(text.encode('utf-8'))} bytes")


if __name__ == "__main__":
    write(os.path.join(ROOT, "tinyrnn", "corpora", "harbour.txt"), harbour())
    write(os.path.join(HERE, "corpora", "chinese.txt"), chinese())
    write(os.path.join(HERE, "corpora", "travel_log.txt"), travel_log())
