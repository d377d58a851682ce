"""The offline text-only question bank: tables of facts retain ships, and the pool of
questions each kind of question draws from (`text_retention.text_qa_items` samples them).

Every pool entry is a question with one right answer and candidate wrong answers of the
same type (near-miss numbers, other capitals of the same region, words of the same table),
in the spirit of MMLU (Hendrycks et al., 2021) and ARC (Clark et al., 2018) items that a
small LLM can answer. Within a kind, no two entries share a question and answer. A
question holding `{options}` lists its four options (in their final order) in the text.
"""

from __future__ import annotations

from typing import Callable, NamedTuple


class Entry(NamedTuple):
    question: str
    right: str
    distractors: tuple[str, ...]  # candidate wrong answers, three are drawn
    always: tuple[str, ...] = ()  # wrong answers that are always among the three (a tempting error)


# ---- tables ---------------------------------------------------------------------------------
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
NUMBER_WORDS = {2: "two", 3: "three"}

# antonym pairs, grouped so that no word of a group is offered as a wrong answer to another
# word of the same group ("below" is not wrong enough for the opposite of "up")
OPPOSITE_GROUPS = [
    [("up", "down"), ("high", "low"), ("above", "below"), ("rise", "fall"), ("ascend", "descend")],
    [("hot", "cold"), ("freeze", "melt"), ("summer", "winter")],
    [("big", "small"), ("wide", "narrow"), ("thick", "thin"), ("long", "short"), ("deep", "shallow")],
    [("day", "night"), ("sunrise", "sunset")],
    [("early", "late"), ("before", "after"), ("first", "last"), ("begin", "end"), ("fast", "slow")],
    [("happy", "sad"), ("laugh", "cry"), ("love", "hate"), ("boring", "interesting")],
    [("open", "closed")], [("wet", "dry")], [("full", "empty")], [("light", "dark")],
    [("hard", "soft"), ("smooth", "rough"), ("sharp", "blunt"), ("tight", "loose"), ("simple", "complex")],
    [("young", "old"), ("ancient", "modern")],
    [("strong", "weak")], [("rich", "poor"), ("cheap", "expensive")], [("push", "pull")],
    [("win", "lose"), ("success", "failure"), ("attack", "defend"), ("lead", "follow")],
    [("buy", "sell"), ("borrow", "lend"), ("give", "take"), ("import", "export")],
    [("come", "go"), ("arrive", "depart")],
    [("inside", "outside"), ("entrance", "exit"), ("interior", "exterior"), ("include", "exclude")],
    [("true", "false"), ("correct", "incorrect"), ("left", "right")], [("clean", "dirty")],
    [("loud", "quiet"), ("whisper", "shout")], [("sweet", "sour")], [("alive", "dead")], [("awake", "asleep")],
    [("safe", "dangerous"), ("careful", "careless"), ("brave", "cowardly")],
    [("add", "subtract"), ("plus", "minus"), ("increase", "decrease"), ("maximum", "minimum")],
    [("north", "south"), ("east", "west")], [("question", "answer")], [("friend", "enemy"), ("war", "peace")],
    [("remember", "forget")], [("accept", "refuse")], [("always", "never")], [("everything", "nothing")],
    [("polite", "rude")], [("wild", "tame")], [("sink", "float")], [("odd", "even")],
    [("positive", "negative"), ("optimist", "pessimist")],
    [("visible", "invisible"), ("possible", "impossible"), ("legal", "illegal"), ("patient", "impatient")],
    [("present", "absent")], [("public", "private")], [("vertical", "horizontal")], [("male", "female")],
    [("major", "minor")], [("floor", "ceiling"), ("mountain", "valley")], [("inhale", "exhale")],
]

# singular -> plural; nouns with one accepted plural only
PLURALS = {
    "mouse": "mice", "child": "children", "foot": "feet", "tooth": "teeth", "goose": "geese", "man": "men",
    "woman": "women", "person": "people", "ox": "oxen", "louse": "lice", "sheep": "sheep", "deer": "deer",
    "moose": "moose", "series": "series", "species": "species", "aircraft": "aircraft", "knife": "knives",
    "leaf": "leaves", "wolf": "wolves", "wife": "wives", "half": "halves", "loaf": "loaves", "shelf": "shelves",
    "thief": "thieves", "calf": "calves", "life": "lives", "box": "boxes", "fox": "foxes", "bus": "buses",
    "dish": "dishes", "church": "churches", "watch": "watches", "glass": "glasses", "dress": "dresses",
    "brush": "brushes", "class": "classes", "kiss": "kisses", "match": "matches", "bench": "benches",
    "lunch": "lunches", "wish": "wishes", "tax": "taxes", "quiz": "quizzes", "baby": "babies", "city": "cities",
    "lady": "ladies", "story": "stories", "party": "parties", "fly": "flies", "country": "countries",
    "puppy": "puppies", "berry": "berries", "family": "families", "army": "armies", "boy": "boys", "day": "days",
    "key": "keys", "toy": "toys", "monkey": "monkeys", "valley": "valleys", "donkey": "donkeys",
    "potato": "potatoes", "tomato": "tomatoes", "hero": "heroes", "echo": "echoes", "piano": "pianos",
    "photo": "photos", "radio": "radios", "zoo": "zoos", "roof": "roofs", "chief": "chiefs", "belief": "beliefs",
    "cliff": "cliffs", "crisis": "crises", "analysis": "analyses", "thesis": "theses", "oasis": "oases",
    "phenomenon": "phenomena", "criterion": "criteria", "nucleus": "nuclei", "stimulus": "stimuli",
    "bacterium": "bacteria", "cat": "cats", "dog": "dogs", "book": "books", "tree": "trees", "house": "houses",
    "car": "cars", "bird": "birds", "apple": "apples", "chair": "chairs", "cup": "cups", "hand": "hands",
    "star": "stars", "girl": "girls", "river": "rivers",
}

# base -> (past tense, past participle); verbs with one accepted past tense only
VERBS = {
    "go": ("went", "gone"), "eat": ("ate", "eaten"), "see": ("saw", "seen"), "take": ("took", "taken"),
    "write": ("wrote", "written"), "run": ("ran", "run"), "swim": ("swam", "swum"), "sing": ("sang", "sung"),
    "drink": ("drank", "drunk"), "begin": ("began", "begun"), "ring": ("rang", "rung"), "give": ("gave", "given"),
    "come": ("came", "come"), "know": ("knew", "known"), "grow": ("grew", "grown"), "throw": ("threw", "thrown"),
    "fly": ("flew", "flown"), "draw": ("drew", "drawn"), "drive": ("drove", "driven"), "ride": ("rode", "ridden"),
    "rise": ("rose", "risen"), "speak": ("spoke", "spoken"), "break": ("broke", "broken"),
    "choose": ("chose", "chosen"), "freeze": ("froze", "frozen"), "steal": ("stole", "stolen"),
    "wake": ("woke", "woken"), "forget": ("forgot", "forgotten"), "bite": ("bit", "bitten"),
    "hide": ("hid", "hidden"), "fall": ("fell", "fallen"), "shake": ("shook", "shaken"), "wear": ("wore", "worn"),
    "tear": ("tore", "torn"), "blow": ("blew", "blown"), "forgive": ("forgave", "forgiven"),
    "become": ("became", "become"), "arise": ("arose", "arisen"), "buy": ("bought", "bought"),
    "bring": ("brought", "brought"), "think": ("thought", "thought"), "catch": ("caught", "caught"),
    "teach": ("taught", "taught"), "fight": ("fought", "fought"), "seek": ("sought", "sought"),
    "sell": ("sold", "sold"), "tell": ("told", "told"), "find": ("found", "found"), "make": ("made", "made"),
    "have": ("had", "had"), "hear": ("heard", "heard"), "hold": ("held", "held"), "keep": ("kept", "kept"),
    "sleep": ("slept", "slept"), "feel": ("felt", "felt"), "leave": ("left", "left"), "meet": ("met", "met"),
    "send": ("sent", "sent"), "spend": ("spent", "spent"), "build": ("built", "built"), "lend": ("lent", "lent"),
    "lose": ("lost", "lost"), "pay": ("paid", "paid"), "say": ("said", "said"), "stand": ("stood", "stood"),
    "understand": ("understood", "understood"), "sit": ("sat", "sat"), "win": ("won", "won"),
    "feed": ("fed", "fed"), "lead": ("led", "led"), "dig": ("dug", "dug"), "strike": ("struck", "struck"),
    "stick": ("stuck", "stuck"), "swing": ("swung", "swung"), "sting": ("stung", "stung"),
    "spin": ("spun", "spun"), "slide": ("slid", "slid"), "bend": ("bent", "bent"), "mean": ("meant", "meant"),
    "deal": ("dealt", "dealt"), "creep": ("crept", "crept"), "sweep": ("swept", "swept"), "weep": ("wept", "wept"),
    "bleed": ("bled", "bled"), "flee": ("fled", "fled"), "lay": ("laid", "laid"), "do": ("did", "done"),
    "cut": ("cut", "cut"), "put": ("put", "put"), "hit": ("hit", "hit"), "shut": ("shut", "shut"),
    "let": ("let", "let"), "cost": ("cost", "cost"), "hurt": ("hurt", "hurt"), "set": ("set", "set"),
    "walk": ("walked", "walked"), "play": ("played", "played"), "jump": ("jumped", "jumped"),
    "talk": ("talked", "talked"), "cry": ("cried", "cried"), "try": ("tried", "tried"),
    "stop": ("stopped", "stopped"), "plan": ("planned", "planned"), "carry": ("carried", "carried"),
    "study": ("studied", "studied"), "dance": ("danced", "danced"), "love": ("loved", "loved"),
    "clap": ("clapped", "clapped"), "open": ("opened", "opened"), "listen": ("listened", "listened"),
    "ask": ("asked", "asked"), "cook": ("cooked", "cooked"), "help": ("helped", "helped"),
    "climb": ("climbed", "climbed"),
}

# "Which of these is <category>?" -> members; no word belongs to two categories
CATEGORIES = {
    "an animal": ["dog", "cat", "horse", "lion", "tiger", "elephant", "rabbit", "cow", "sheep", "monkey", "wolf",
                  "zebra", "giraffe", "camel"],
    "a fruit": ["apple", "banana", "pear", "grape", "mango", "strawberry", "pineapple", "melon", "papaya",
                "coconut", "watermelon", "blueberry", "fig", "pomegranate"],
    "a vegetable": ["carrot", "potato", "onion", "cabbage", "lettuce", "broccoli", "spinach", "pea", "celery",
                    "turnip", "radish", "leek", "cauliflower", "garlic"],
    "a vehicle": ["car", "bus", "train", "bicycle", "truck", "motorcycle", "ship", "airplane", "tractor", "scooter",
                  "tram", "van", "helicopter", "canoe"],
    "a tool": ["hammer", "saw", "screwdriver", "wrench", "drill", "chisel", "pliers", "shovel", "rake", "axe",
               "crowbar", "trowel"],
    "a musical instrument": ["piano", "guitar", "violin", "drum", "flute", "trumpet", "cello", "harp", "clarinet",
                             "saxophone", "trombone", "banjo", "accordion", "oboe"],
    "a colour": ["red", "blue", "green", "yellow", "purple", "pink", "brown", "black", "white", "grey", "turquoise",
                 "crimson", "scarlet", "indigo"],
    "a country": ["France", "Japan", "Brazil", "Canada", "Egypt", "India", "Kenya", "Mexico", "Norway", "Peru",
                  "Spain", "Italy", "Ghana", "Sweden"],
    "a piece of clothing": ["shirt", "trousers", "jacket", "coat", "sock", "shoe", "hat", "scarf", "glove", "skirt",
                            "dress", "sweater", "boot", "blouse"],
    "a part of the body": ["hand", "foot", "knee", "elbow", "shoulder", "ear", "nose", "finger", "ankle", "wrist",
                           "chin", "thumb", "eyebrow", "forehead"],
    "a piece of furniture": ["chair", "table", "sofa", "bed", "wardrobe", "desk", "stool", "cupboard", "bookcase",
                             "armchair", "dresser", "cabinet"],
}

ANIMAL_CLASSES = {
    "mammal": ["dog", "cat", "whale", "dolphin", "bat", "horse", "elephant", "cow", "lion", "mouse", "kangaroo",
               "rabbit", "tiger", "giraffe", "zebra", "bear", "wolf", "fox", "deer", "hedgehog", "squirrel", "otter",
               "seal", "camel", "goat", "pig", "sheep", "monkey"],
    "bird": ["eagle", "penguin", "ostrich", "owl", "parrot", "sparrow", "duck", "swan", "pigeon", "crow", "flamingo",
             "robin", "hawk", "hen", "goose", "woodpecker", "peacock", "pelican", "seagull", "falcon"],
    "fish": ["shark", "salmon", "trout", "tuna", "cod", "goldfish", "carp", "herring", "sardine", "mackerel", "eel",
             "perch", "pike", "haddock", "swordfish", "anchovy"],
    "reptile": ["snake", "lizard", "crocodile", "turtle", "tortoise", "alligator", "iguana", "gecko", "cobra",
                "python", "chameleon", "viper"],
    "amphibian": ["frog", "toad", "newt", "salamander", "axolotl"],
    "insect": ["ant", "bee", "butterfly", "beetle", "mosquito", "grasshopper", "wasp", "moth", "ladybird", "cricket",
               "dragonfly", "termite", "flea", "cockroach", "fly"],
}

# region -> (country, capital, a tempting wrong answer or ""); wrong answers come from the region
CAPITALS = {
    "Europe": [
        ("France", "Paris", ""), ("Italy", "Rome", "Milan"), ("Germany", "Berlin", "Munich"),
        ("Spain", "Madrid", "Barcelona"),
        ("Portugal", "Lisbon", "Porto"), ("the United Kingdom", "London", ""), ("Ireland", "Dublin", ""),
        ("Belgium", "Brussels", ""), ("Austria", "Vienna", ""), ("Poland", "Warsaw", "Krakow"),
        ("the Czech Republic", "Prague", ""), ("Hungary", "Budapest", ""), ("Greece", "Athens", ""),
        ("Sweden", "Stockholm", ""), ("Norway", "Oslo", ""), ("Denmark", "Copenhagen", ""), ("Finland", "Helsinki", ""),
        ("Iceland", "Reykjavik", ""), ("Russia", "Moscow", "Saint Petersburg"), ("Ukraine", "Kyiv", ""),
        ("Romania", "Bucharest", ""), ("Bulgaria", "Sofia", ""), ("Serbia", "Belgrade", ""), ("Croatia", "Zagreb", ""),
        ("Slovakia", "Bratislava", ""), ("Slovenia", "Ljubljana", ""), ("Estonia", "Tallinn", ""),
        ("Latvia", "Riga", ""), ("Lithuania", "Vilnius", ""), ("Albania", "Tirana", ""), ("Belarus", "Minsk", ""),
        ("Cyprus", "Nicosia", ""), ("Malta", "Valletta", ""), ("the Netherlands", "Amsterdam", ""),
    ],
    "Africa": [
        ("Egypt", "Cairo", "Alexandria"), ("Kenya", "Nairobi", "Mombasa"), ("Ethiopia", "Addis Ababa", ""),
        ("Nigeria", "Abuja", "Lagos"), ("Ghana", "Accra", ""), ("Morocco", "Rabat", "Casablanca"),
        ("Algeria", "Algiers", ""), ("Tunisia", "Tunis", ""), ("Senegal", "Dakar", ""), ("Uganda", "Kampala", ""),
        ("Zimbabwe", "Harare", ""), ("Zambia", "Lusaka", ""), ("Angola", "Luanda", ""), ("Sudan", "Khartoum", ""),
        ("Libya", "Tripoli", ""), ("Mali", "Bamako", "Timbuktu"), ("Madagascar", "Antananarivo", ""),
        ("Rwanda", "Kigali", ""), ("Namibia", "Windhoek", ""), ("Botswana", "Gaborone", ""),
        ("Mozambique", "Maputo", ""),
    ],
    "Asia": [
        ("China", "Beijing", "Shanghai"), ("India", "New Delhi", "Mumbai"), ("Japan", "Tokyo", "Kyoto"),
        ("South Korea", "Seoul", "Busan"), ("Thailand", "Bangkok", ""), ("Vietnam", "Hanoi", "Ho Chi Minh City"),
        ("the Philippines", "Manila", ""), ("Malaysia", "Kuala Lumpur", ""), ("Pakistan", "Islamabad", "Karachi"),
        ("Bangladesh", "Dhaka", ""), ("Nepal", "Kathmandu", ""), ("Iran", "Tehran", ""), ("Iraq", "Baghdad", ""),
        ("Saudi Arabia", "Riyadh", "Mecca"), ("Syria", "Damascus", "Aleppo"), ("Jordan", "Amman", ""),
        ("Lebanon", "Beirut", ""), ("Afghanistan", "Kabul", ""), ("Mongolia", "Ulaanbaatar", ""),
        ("Cambodia", "Phnom Penh", ""), ("Laos", "Vientiane", ""), ("Qatar", "Doha", ""), ("Oman", "Muscat", ""),
        ("Armenia", "Yerevan", ""), ("Georgia", "Tbilisi", ""), ("Azerbaijan", "Baku", ""),
        ("Uzbekistan", "Tashkent", ""), ("Turkey", "Ankara", "Istanbul"),
    ],
    "the Americas": [
        ("Canada", "Ottawa", "Toronto"), ("the United States", "Washington, D.C.", "New York"),
        ("Mexico", "Mexico City", ""), ("Cuba", "Havana", ""), ("Jamaica", "Kingston", ""),
        ("Brazil", "Brasília", "Rio de Janeiro"), ("Argentina", "Buenos Aires", ""), ("Chile", "Santiago", ""),
        ("Peru", "Lima", ""), ("Colombia", "Bogotá", ""), ("Venezuela", "Caracas", ""), ("Ecuador", "Quito", ""),
        ("Uruguay", "Montevideo", ""), ("Paraguay", "Asunción", ""), ("Panama", "Panama City", ""),
        ("Costa Rica", "San José", ""), ("Guatemala", "Guatemala City", ""), ("Honduras", "Tegucigalpa", ""),
        ("Nicaragua", "Managua", ""), ("Haiti", "Port-au-Prince", ""), ("the Dominican Republic", "Santo Domingo", ""),
    ],
    "Oceania": [
        ("Australia", "Canberra", "Sydney"), ("New Zealand", "Wellington", "Auckland"), ("Fiji", "Suva", ""),
        ("Papua New Guinea", "Port Moresby", ""),
    ],
}

# (larger unit, its plural, smaller unit in plural, how many smaller units in one larger)
UNITS = [("metre", "metres", "centimetres", 100), ("kilometre", "kilometres", "metres", 1000),
         ("centimetre", "centimetres", "millimetres", 10), ("kilogram", "kilograms", "grams", 1000),
         ("litre", "litres", "millilitres", 1000), ("hour", "hours", "minutes", 60),
         ("minute", "minutes", "seconds", 60), ("day", "days", "hours", 24), ("week", "weeks", "days", 7),
         ("year", "years", "months", 12), ("decade", "decades", "years", 10), ("century", "centuries", "years", 100),
         ("foot", "feet", "inches", 12)]

# everyday and school-science facts: (question, right, three wrong answers)
FACTS = [
    ("What colour is the sky on a clear day?", "blue", ["green", "red", "black"]),
    ("What colour is fresh grass?", "green", ["blue", "purple", "white"]),
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("How many legs does a dog have?", "four", ["two", "six", "eight"]),
    ("How many legs does an insect have?", "six", ["eight", "four", "ten"]),
    ("What do bees make?", "honey", ["milk", "silk", "wool"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "glass"]),
    ("Which animal barks?", "dog", ["cat", "cow", "fish"]),
    ("Which planet do we live on?", "Earth", ["Mars", "Venus", "Jupiter"]),
    ("How many days are in a week?", "seven", ["five", "ten", "twelve"]),
    ("Which season is the coldest?", "winter", ["summer", "spring", "autumn"]),
    ("What gas do plants take in from the air to make their food?", "carbon dioxide", ["oxygen", "nitrogen", "helium"]),
    ("What gas do people need to breathe in to stay alive?", "oxygen", ["carbon dioxide", "helium", "hydrogen"]),
    ("Which gas do we breathe out more of than we breathe in?", "carbon dioxide", ["oxygen", "nitrogen", "helium"]),
    ("Which gas makes up most of the air?", "nitrogen", ["oxygen", "carbon dioxide", "hydrogen"]),
    ("Which light gas makes party balloons float?", "helium", ["oxygen", "carbon dioxide", "nitrogen"]),
    ("At what temperature in degrees Celsius does water boil at sea level?", "100", ["50", "0", "212"]),
    ("At what temperature in degrees Celsius does water freeze?", "0", ["10", "100", "32"]),
    ("What is the closest star to the Earth?", "the Sun", ["Sirius", "the Moon", "Polaris"]),
    ("Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Jupiter"]),
    ("Which planet is the largest in our solar system?", "Jupiter", ["Saturn", "Earth", "Mars"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Jupiter", "Mercury"]),
    ("Which planet is famous for its large rings?", "Saturn", ["Mars", "Mercury", "Venus"]),
    ("How many planets are in our solar system?", "eight", ["seven", "nine", "ten"]),
    ("What is the Earth's natural satellite called?", "the Moon", ["the Sun", "Mars", "a comet"]),
    ("What is the main source of energy for life on Earth?", "the Sun", ["the Moon", "the wind", "coal"]),
    ("How long does the Earth take to travel once around the Sun?", "about one year",
     ["about one day", "about one month", "about one week"]),
    ("How long does the Earth take to spin once on its axis?", "about one day",
     ["about one year", "about one month", "about one hour"]),
    ("What causes day and night on the Earth?", "the Earth spinning on its axis",
     ["the Earth moving around the Sun", "the Moon moving around the Earth", "clouds covering the Sun"]),
    ("What causes the seasons on the Earth?", "the tilt of the Earth's axis",
     ["the distance from the Earth to the Sun", "the phases of the Moon", "the speed of the wind"]),
    ("In which direction does the Sun rise?", "east", ["west", "north", "south"]),
    ("In which direction does the Sun set?", "west", ["east", "north", "south"]),
    ("What force pulls objects towards the ground?", "gravity", ["magnetism", "friction", "electricity"]),
    ("What is the chemical formula of water?", "H2O", ["CO2", "O2", "NaCl"]),
    ("What is the chemical symbol for gold?", "Au", ["Ag", "Gd", "Go"]),
    ("What is the chemical symbol for iron?", "Fe", ["Ir", "In", "I"]),
    ("What is the chemical symbol for sodium?", "Na", ["So", "Sd", "S"]),
    ("Which organ pumps blood around the body?", "the heart", ["the lungs", "the liver", "the stomach"]),
    ("Which organs do people use to breathe?", "the lungs", ["the heart", "the kidneys", "the stomach"]),
    ("Which organ controls the body and lets us think?", "the brain", ["the heart", "the liver", "the lungs"]),
    ("What is the largest organ of the human body?", "the skin", ["the liver", "the heart", "the brain"]),
    ("How many bones are in the adult human body?", "206", ["106", "306", "186"]),
    ("Which blood cells fight infection?", "white blood cells", ["red blood cells", "platelets", "nerve cells"]),
    ("What do red blood cells carry around the body?", "oxygen", ["sugar", "salt", "fat"]),
    ("Which vitamin does the skin make in sunlight?", "vitamin D", ["vitamin C", "vitamin A", "vitamin B12"]),
    ("What is the hardest natural substance?", "diamond", ["gold", "iron", "quartz"]),
    ("Which metal is liquid at room temperature?", "mercury", ["iron", "copper", "silver"]),
    ("Which material is attracted by a magnet?", "iron", ["wood", "plastic", "glass"]),
    ("Which of these materials conducts electricity best?", "copper", ["rubber", "wood", "plastic"]),
    ("Which material is transparent?", "glass", ["wood", "steel", "brick"]),
    ("What do we call an animal that eats only plants?", "a herbivore", ["a carnivore", "an omnivore", "a predator"]),
    ("What do we call an animal that eats only meat?", "a carnivore", ["a herbivore", "an omnivore", "a producer"]),
    ("What do we call an animal that eats both plants and meat?", "an omnivore",
     ["a herbivore", "a carnivore", "a producer"]),
    ("What process do plants use to make food from sunlight?", "photosynthesis",
     ["respiration", "digestion", "evaporation"]),
    ("What is water turning into vapour called?", "evaporation", ["condensation", "freezing", "melting"]),
    ("What is water vapour turning into liquid called?", "condensation", ["evaporation", "melting", "freezing"]),
    ("What is ice turning into liquid water called?", "melting", ["freezing", "condensation", "evaporation"]),
    ("Which part of a plant takes in water from the soil?", "the roots", ["the leaves", "the flowers", "the seeds"]),
    ("What is the centre of an atom called?", "the nucleus", ["the electron", "the shell", "the molecule"]),
    ("Which particle of an atom has a negative charge?", "the electron", ["the proton", "the neutron", "the nucleus"]),
    ("Which particle of an atom has a positive charge?", "the proton", ["the electron", "the neutron", "the photon"]),
    ("What kind of energy does a moving object have?", "kinetic energy",
     ["potential energy", "chemical energy", "nuclear energy"]),
    ("What does a thermometer measure?", "temperature", ["weight", "speed", "time"]),
    ("What does a barometer measure?", "air pressure", ["temperature", "wind speed", "rainfall"]),
    ("Which instrument makes very small things look bigger?", "a microscope",
     ["a telescope", "a periscope", "a stethoscope"]),
    ("Which instrument is used to look at distant stars?", "a telescope",
     ["a microscope", "a stethoscope", "a thermometer"]),
    ("Which way does the needle of a compass point?", "north", ["south", "east", "west"]),
    ("What is the unit of electric current?", "the ampere", ["the volt", "the watt", "the ohm"]),
    ("What is the unit of force?", "the newton", ["the joule", "the watt", "the pascal"]),
    ("What is the unit of energy?", "the joule", ["the newton", "the volt", "the ampere"]),
    ("What is the unit of power?", "the watt", ["the joule", "the newton", "the ohm"]),
    ("What is the largest ocean on the Earth?", "the Pacific Ocean",
     ["the Atlantic Ocean", "the Indian Ocean", "the Arctic Ocean"]),
    ("What is the largest continent?", "Asia", ["Africa", "Europe", "Australia"]),
    ("How many continents are there?", "seven", ["five", "six", "eight"]),
    ("What is the tallest mountain on the Earth?", "Mount Everest", ["K2", "Mont Blanc", "Kilimanjaro"]),
    ("Which is the largest mammal?", "the blue whale", ["the elephant", "the giraffe", "the hippopotamus"]),
    ("Which is the tallest animal?", "the giraffe", ["the elephant", "the horse", "the camel"]),
    ("Which is the fastest land animal?", "the cheetah", ["the lion", "the horse", "the deer"]),
    ("What do caterpillars turn into?", "butterflies", ["beetles", "spiders", "worms"]),
    ("What do tadpoles grow into?", "frogs", ["fish", "snakes", "lizards"]),
    ("What do fish use to breathe?", "gills", ["lungs", "fins", "scales"]),
    ("What is a baby cat called?", "a kitten", ["a puppy", "a calf", "a foal"]),
    ("What is a baby dog called?", "a puppy", ["a kitten", "a cub", "a lamb"]),
    ("What is a baby sheep called?", "a lamb", ["a calf", "a foal", "a kid"]),
    ("What is a baby cow called?", "a calf", ["a foal", "a lamb", "a piglet"]),
    ("What is a baby horse called?", "a foal", ["a calf", "a cub", "a kitten"]),
    ("What is a group of wolves called?", "a pack", ["a herd", "a flock", "a swarm"]),
    ("What is a group of birds called?", "a flock", ["a pack", "a swarm", "a school"]),
    ("Which sense do we use our ears for?", "hearing", ["sight", "smell", "taste"]),
    ("Which sense do we use our nose for?", "smell", ["hearing", "taste", "touch"]),
    ("Which sense do we use our eyes for?", "sight", ["hearing", "smell", "touch"]),
    ("Which sense do we use our tongue for?", "taste", ["smell", "sight", "hearing"]),
    ("What is a scientist who studies rocks called?", "a geologist", ["a biologist", "a chemist", "an astronomer"]),
    ("What is a scientist who studies stars and planets called?", "an astronomer",
     ["a geologist", "a biologist", "a botanist"]),
    ("What is a scientist who studies plants called?", "a botanist", ["a geologist", "an astronomer", "a zoologist"]),
    ("What is a scientist who studies animals called?", "a zoologist",
     ["a botanist", "a geologist", "an astronomer"]),
    ("What colour do you get by mixing blue and yellow paint?", "green", ["purple", "orange", "brown"]),
    ("What colour do you get by mixing red and white paint?", "pink", ["purple", "orange", "grey"]),
    ("What colour do you get by mixing red and yellow paint?", "orange", ["green", "purple", "pink"]),
    ("What colour do you get by mixing red and blue paint?", "purple", ["green", "orange", "brown"]),
    ("What colour do you get by mixing black and white paint?", "grey", ["pink", "brown", "blue"]),
    ("How many colours are in a rainbow?", "seven", ["five", "six", "nine"]),
    ("How many sides does a triangle have?", "three", ["four", "five", "six"]),
    ("How many sides does a pentagon have?", "five", ["four", "six", "eight"]),
    ("How many sides does a hexagon have?", "six", ["five", "seven", "eight"]),
    ("How many sides does an octagon have?", "eight", ["six", "seven", "ten"]),
    ("How many degrees are in a right angle?", "90", ["45", "180", "360"]),
    ("How many degrees are in a full circle?", "360", ["180", "90", "270"]),
    ("What do the angles of a triangle add up to?", "180 degrees", ["90 degrees", "360 degrees", "270 degrees"]),
    ("Which shape has no corners?", "a circle", ["a square", "a triangle", "a rectangle"]),
    ("What is the main ingredient of bread?", "flour", ["sugar", "rice", "butter"]),
    ("What do we use to measure length?", "a ruler", ["a scale", "a clock", "a thermometer"]),
    ("What do we use to measure weight?", "a scale", ["a ruler", "a clock", "a thermometer"]),
]


# ---- pools, one per kind ----------------------------------------------------------------------
def _near(right: int, offsets) -> tuple[str, ...]:
    """Near-miss numbers: right + each offset, non-negative, distinct, never `right`."""
    return tuple(dict.fromkeys(str(right + d) for d in offsets if d and right + d >= 0))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def addition() -> list[Entry]:
    return [Entry(f"What is {a} plus {b}?", str(a + b), _near(a + b, (1, -1, 10, -10, 2, -2)))
            for a in range(10, 100) for b in range(a, 100)]


def subtraction() -> list[Entry]:
    return [Entry(f"What is {a} minus {b}?", str(a - b), _near(a - b, (1, -1, 10, -10, 2, -2)))
            for a in range(20, 100) for b in range(2, a - 1)]


def multiplication() -> list[Entry]:
    return [Entry(f"What is {a} times {b}?", str(a * b), _near(a * b, (a, -a, b, -b, 1, -1, a + b - a * b)))
            for a in range(2, 16) for b in range(a, 16)]


def division() -> list[Entry]:
    return [Entry(f"What is {a * b} divided by {b}?", str(a), _near(a, (1, -1, 2, -2, b - a)))
            for a in range(2, 13) for b in range(2, 13)]


def comparison() -> list[Entry]:
    largest = [Entry("Which number is the largest: {options}?", str(r), tuple(str(x) for x in range(r - 30, r)))
               for r in range(31, 111)]
    smallest = [Entry("Which number is the smallest: {options}?", str(r), tuple(str(x) for x in range(r + 1, r + 31)))
                for r in range(1, 81)]
    return largest + smallest


def sequences() -> list[Entry]:
    out = []
    for start in range(1, 21):
        for step in range(2, 10):
            terms = [start + k * step for k in range(5)]
            out.append(Entry(f"What number comes next in the sequence {', '.join(map(str, terms[:4]))}?",
                             str(terms[4]), _near(terms[4], (1, -1, step, -step, 2, -2))))
    for start in range(1, 7):
        for ratio in (2, 3):
            terms = [start * ratio ** k for k in range(5)]
            arithmetic = 2 * terms[3] - terms[2]  # continuing by the last difference: the tempting error
            out.append(Entry(f"What number comes next in the sequence {', '.join(map(str, terms[:4]))}?",
                             str(terms[4]), _near(terms[4], (arithmetic - terms[4], 1, -1, terms[4]))))
    return out


def units() -> list[Entry]:
    factors = sorted({f for *_, f in UNITS})
    out = []
    for _, plural, small, f in UNITS:
        for n in range(2, 13):
            wrong = [n * g for g in factors] + [n * f * 10]  # the quantity times another unit's factor
            out.append(Entry(f"How many {small} are in {n} {plural}?", str(n * f),
                             tuple(dict.fromkeys(str(w) for w in wrong if w != n * f))))
    return out


def calendar() -> list[Entry]:
    out = []
    for names, unit in ((DAYS, "day"), (MONTHS, "month")):
        m = len(names)
        for i, name in enumerate(names):
            for k in (1, 2, 3):
                for sign, word in ((1, "after"), (-1, "before")):
                    q = (f"Which {unit} comes {word} {name}?" if k == 1 else
                         f"Which {unit} is {NUMBER_WORDS[k]} {unit}s {word} {name}?")
                    right = (i + sign * k) % m
                    wrong = [(right + 1) % m, (right - 1) % m, (i - sign * k) % m, i, (right + 2 * sign) % m]
                    out.append(Entry(q, names[right], tuple(dict.fromkeys(names[w] for w in wrong if w != right))))
    return out


def opposites() -> list[Entry]:
    out = []
    for g, group in enumerate(OPPOSITE_GROUPS):
        others = tuple(w for h, other in enumerate(OPPOSITE_GROUPS) if h != g for pair in other for w in pair)
        for a, b in group:
            out += [Entry(f"What is the opposite of {a}?", b, others),
                    Entry(f"What is the opposite of {b}?", a, others)]
    return out


def plurals() -> list[Entry]:
    out = []
    for s, p in PLURALS.items():
        wrong = [s + "s", s + "es", s, s + "en"]  # the rules a learner over-applies, where they apply
        if s.endswith("y"):
            wrong.append(s[:-1] + "ies")
        elif s.endswith(("f", "fe")):
            wrong += [s[:-1] + "ves", s[:-2] + "ves"]
        out.append(Entry(f"What is the plural of {s}?", p, tuple(dict.fromkeys(w for w in wrong if w != p))))
    return out


def past_tense() -> list[Entry]:
    out = []
    for base, (past, participle) in VERBS.items():
        stem = base[:-1] if base.endswith("e") else base
        wrong = [stem + "ed", participle, base, base + ("es" if base.endswith(("s", "sh", "ch", "o")) else "s"),
                 stem + "ing", base + "t"]
        out.append(Entry(f"What is the past tense of {base}?", past,
                         tuple(dict.fromkeys(w for w in wrong if w != past))))
    return out


def categories() -> list[Entry]:
    out = []
    for cat, members in CATEGORIES.items():
        others = tuple(w for c, ws in CATEGORIES.items() if c != cat for w in ws)
        out += [Entry(f"Which of these is {cat}: {{options}}?", m, others) for m in members]
    return out


def animal_classes() -> list[Entry]:
    return [Entry(f"What kind of animal is {_article(animal)} {animal}?", cls,
                  tuple(c for c in ANIMAL_CLASSES if c != cls))
            for cls, animals in ANIMAL_CLASSES.items() for animal in animals]


def capitals() -> list[Entry]:
    out = []
    for rows in CAPITALS.values():
        for country, capital, tempting in rows:
            cities = tuple(c for _, c, _ in rows if c != capital)
            out.append(Entry(f"What is the capital of {country}?", capital, cities, (tempting,) if tempting else ()))
            out.append(Entry(f"{capital} is the capital of which country?", country,
                             tuple(c for c, _, _ in rows if c != country)))
    return out


def alphabetical() -> list[Entry]:
    words = sorted({w for c, ws in CATEGORIES.items() if c != "a country" for w in ws})
    return [Entry("Which word comes first in alphabetical order: {options}?", w, tuple(words[i + 1:i + 31]))
            for i, w in enumerate(words[:-3])]


def facts() -> list[Entry]:
    return [Entry(q, right, tuple(wrong)) for q, right, wrong in FACTS]


# kind -> its pool; the order is the order of text_qa_items' draws (append new kinds at the end)
QUESTION_KINDS: dict[str, Callable[[], list[Entry]]] = {
    "addition": addition, "subtraction": subtraction, "multiplication": multiplication, "division": division,
    "comparison": comparison, "sequences": sequences, "units": units, "calendar": calendar,
    "opposites": opposites, "plurals": plurals, "past_tense": past_tense, "categories": categories,
    "animal_classes": animal_classes, "capitals": capitals, "alphabetical": alphabetical, "facts": facts,
}
