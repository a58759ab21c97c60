"""The words of the SAMPLE ad catalog: per-category vocabularies and the text templates.

Pure data for ``indexer.sample``, which composes ads and organic pins from it: one ``Vocab`` per
category (products, styles, materials, uses, selling points, pin topics, calls to action, brand
suffixes), the shared colours, seasons, brand words and countries, and the templates for ad
titles, descriptions and creatives and for pin titles and descriptions. Templates are
``str.format_map`` strings over the slots ``indexer.sample`` fills in.

Changing anything here changes the generated sample files (they are drawn in order from one
``random.Random``), so treat edits as a new sample.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vocab:
    """The words of one category; every tuple is sampled uniformly."""

    name: str
    slug: str
    weight: float  # relative share of advertisers and of user interests
    base_bid_usd: float
    tangible: bool  # physical goods: colours, shipping and returns make sense
    prices_usd: tuple[int, ...]
    related: tuple[str, ...]  # slugs whose styles and materials cross over into this category
    nouns: tuple[tuple[str, str], ...]  # (singular, plural)
    styles: tuple[str, ...]
    materials: tuple[str, ...]  # materials, flavours or destinations: what goes before the noun
    uses: tuple[str, ...]  # plural noun phrases that read after "for"
    benefits: tuple[str, ...]  # whole sentences
    topics: tuple[str, ...]  # what organic pins are about
    ctas: tuple[str, ...]
    brands: tuple[str, ...]  # brand-name suffixes typical of the category


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    return noun + "s"


def _split(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split("|"))


def _v(
    name: str,
    slug: str,
    weight: float,
    bid: float,
    tangible: bool,
    prices: tuple[int, ...],
    related: str,
    *,
    nouns: str,
    styles: str,
    materials: str,
    uses: str,
    benefits: str,
    topics: str,
    ctas: str,
    brands: str,
) -> Vocab:
    """One category; lists are "|"-separated, an irregular plural follows its noun after ":"."""
    pairs = tuple((s, p or _plural(s)) for s, _, p in (n.partition(":") for n in _split(nouns)))
    return Vocab(
        name, slug, weight, bid, tangible, prices, tuple(related.split()), pairs,
        _split(styles), _split(materials), _split(uses), _split(benefits), _split(topics),
        _split(ctas), _split(brands),
    )  # fmt: skip


VOCABS: tuple[Vocab, ...] = (
    _v("home decor", "home-decor", 10, 1.0, True, (25, 40, 50, 75, 100), "furniture diy-crafts holidays-events art",
       nouns="throw pillow|wall mirror|vase|table lamp|area rug|candle holder|plant stand|floating shelf:floating shelves|"
             "wall hanging|throw blanket|picture frame|table runner|wall clock|decorative tray|planter",
       styles="boho|minimalist|Scandinavian|mid-century|farmhouse|coastal|Japandi|maximalist|vintage-inspired|"
              "modern|cozy|rustic|French country|art deco|eclectic",
       materials="linen|rattan|ceramic|velvet|jute|brass|marble|terracotta|oak|woven cotton|travertine|stoneware|wool",
       uses="small spaces|cozy bedrooms|entryways|reading nooks|open-plan living|rental apartments|guest rooms|first homes",
       benefits="Each piece is handcrafted by small-batch artisans.|Layer textures for an instantly lived-in look.|"
                "Designed for rentals, no drilling needed.|Mix and match across the whole collection.|"
                "Neutral tones that go with everything.|Sustainably sourced and made to last.",
       topics="gallery wall|cozy living room|bedroom makeover|entryway refresh|bookshelf styling|neutral home|"
              "small apartment decor|mantel styling|coffee table styling|renter-friendly updates",
       ctas="Shop the room|Shop the look|Refresh your space", brands="Home|Living|Interiors"),
    _v("recipes & food", "recipes", 10, 0.7, False, (10, 15, 20, 30), "holidays-events fitness kids-parenting",
       nouns="meal kit|spice blend|pasta sauce|olive oil|bread mix|baking mix|salad kit|hot sauce|cold brew|"
             "pancake mix|marinade|soup|frozen pizza|snack box|protein bar|dumpling",
       styles="easy|one-pan|plant-based|high-protein|gluten-free|gourmet|30-minute|family-size|keto-friendly|"
              "budget-friendly|Mediterranean|spicy|Korean-inspired|small-batch",
       materials="garlic herb|lemon pepper|smoky chipotle|roasted tomato|honey sriracha|maple cinnamon|truffle|"
                 "miso ginger|basil pesto|chocolate chip|sea salt|harissa",
       uses="weeknight dinners|meal prep|lazy Sundays|brunch|game day|picky eaters|busy families|date night|lunchboxes",
       benefits="Ready in 20 minutes with pantry staples.|Chef-tested recipes delivered every week.|"
                "No artificial preservatives, ever.|Skip the grocery run and cook like a pro.|"
                "Pre-portioned ingredients mean zero food waste.|Made in small batches from real ingredients.",
       topics="one-pan dinners|sheet pan chicken|healthy breakfast|sourdough bread|pasta night|easy dessert|"
              "meal prep bowls|comfort food|soup season|charcuterie board",
       ctas="Get the recipe|Order your first box|Try it free|Cook tonight", brands="Kitchen|Pantry|Foods"),
    _v("women's fashion", "womens-fashion", 9, 1.1, True, (30, 50, 80, 120), "jewelry beauty wedding",
       nouns="midi dress|wrap dress|blazer|cardigan|wide-leg trouser|maxi skirt|trench coat|crossbody bag|"
             "knit sweater|ballet flat|ankle boot|jumpsuit|blouse|denim jacket|tote bag",
       styles="effortless|classic|chic|relaxed-fit|feminine|oversized|tailored|French girl|vintage-inspired|"
              "minimalist|bohemian|elevated|flowy",
       materials="linen|silk|cashmere|organic cotton|vegan leather|satin|denim|merino|crochet|tweed|ribbed knit",
       uses="work|date night|weekend brunch|wedding guests|vacation|everyday wear|fall layering|capsule wardrobes",
       benefits="Sizes XS to 3X with a true-to-size fit.|Designed to mix into a capsule wardrobe.|"
                "Ethically made in limited runs.|Machine washable and wrinkle resistant.|"
                "Pockets on everything, obviously.|Free alterations on full-price styles.",
       topics="capsule wardrobe|fall outfits|work outfits|spring outfit ideas|date night outfit|street style|"
              "wedding guest dress|summer dresses|brunch outfit|airport outfit",
       ctas="Shop the look|Shop new arrivals|Find your fit", brands="Atelier|Label|Studio"),
    _v("men's style", "mens-style", 5, 1.0, True, (40, 60, 100, 150), "tech-gadgets fitness outdoor-camping",
       nouns="oxford shirt|chino|bomber jacket|leather belt|chelsea boot|crew neck sweater|overshirt|watch strap|"
             "slim-fit suit|white sneaker|wool coat|henley|dopp kit|flannel shirt",
       styles="classic|rugged|tailored|smart casual|minimal|heritage|modern|relaxed|streetwear|preppy|workwear-inspired",
       materials="full-grain leather|merino wool|selvedge denim|brushed cotton|suede|linen|waxed canvas|flannel|corduroy",
       uses="the office|weekend plans|wedding season|first dates|business travel|everyday carry|cold mornings",
       benefits="Built to age well and last for years.|Tailored fit without the tailor price.|"
                "Free hemming on every pair.|Made in Portugal by family-run mills.|"
                "Designed to layer from fall into winter.",
       topics="men's outfit ideas|smart casual look|fall layering for men|grooming routine|men's capsule wardrobe|"
              "wedding guest suit|minimalist men's style|boots and denim",
       ctas="Shop men's|Upgrade your wardrobe|Shop the edit", brands="Supply|Outfitters|Clothing"),
    _v("beauty", "beauty", 8, 1.2, True, (15, 25, 40, 60), "hair nails wedding",
       nouns="vitamin C serum|lip oil|setting spray|cleansing balm|eyeshadow palette|blush stick|night cream|"
             "sunscreen|mascara|face mask|bronzer|brow gel|makeup brush set|toner",
       styles="dewy|glowy|clean|lightweight|long-wear|cruelty-free|hydrating|matte|natural|fragrance-free|"
              "K-beauty|soft glam",
       materials="hyaluronic acid|niacinamide|squalane|rosehip|vitamin E|shea butter|peptide|ceramide|aloe|"
                 "green tea|retinol",
       uses="sensitive skin|everyday makeup|date night glam|oily skin|dry winter skin|morning routines|bridal makeup",
       benefits="Dermatologist tested and safe for sensitive skin.|Vegan, cruelty-free and made without parabens.|"
                "Visible results in just two weeks.|Shades for every skin tone.|"
                "Refillable packaging cuts plastic waste.",
       topics="skincare routine|glowy makeup|natural makeup look|everyday makeup|summer skincare|makeup tutorial|"
              "skin care tips|dewy skin|smoky eye|glass skin",
       ctas="Shop skincare|Find your shade|Try it risk-free|Get glowing", brands="Beauty|Skin|Cosmetics"),
    _v("hair", "hair", 6, 0.9, True, (15, 25, 40, 80), "beauty wedding",
       nouns="hair oil|curl cream|dry shampoo|hair mask|claw clip|heat protectant|round brush|scrunchie|"
             "blow dryer|curling wand|leave-in conditioner|hair serum|scalp scrubber|headband",
       styles="frizz-free|bouncy|sleek|effortless|voluminous|heatless|curly-girl approved|salon-quality|"
              "lightweight|nourishing|glossy",
       materials="argan oil|rosemary oil|keratin|coconut|biotin|silk|shea butter|castor oil|rice water",
       uses="curly hair|fine hair|second-day hair|wedding updos|beach waves|thick hair|short hair|busy mornings",
       benefits="Salon results at home in under ten minutes.|Sulfate-free and color-safe.|"
                "Tested on every curl pattern.|Cuts styling time in half.|Gentle enough for daily use.",
       topics="easy hairstyles|heatless curls|balayage|braid tutorial|curly hair routine|short haircuts|"
              "wedding hair|bob haircut|hair color ideas|updo tutorial",
       ctas="Shop hair care|Find your routine|Book a stylist", brands="Hair|Salon|Locks"),
    _v("wedding", "wedding", 7, 1.6, True, (25, 50, 100, 250), "home-decor jewelry womens-fashion stationery photography",
       nouns="centerpiece|bridal gown|veil|bridesmaid dress|wedding invitation|floral arch|cake topper|guest book|"
             "bouquet|seating chart|welcome sign|favor box|ring box|place card",
       styles="boho|romantic|rustic|classic|garden|modern|vintage|whimsical|elegant|minimalist|black-tie|destination",
       materials="eucalyptus|pampas grass|lace|satin|dried flower|gold foil|crystal|tulle|acrylic|wildflower|"
                 "chiffon|pearl",
       uses="barn weddings|beach weddings|micro weddings|spring ceremonies|elopements|garden receptions|"
            "fall weddings|bridal showers",
       benefits="Customize colors and names to match your day.|Trusted by over 50,000 couples.|"
                "Samples ship free in 48 hours.|Designed to photograph beautifully.|"
                "Ships in time for your big day.",
       topics="wedding inspiration|wedding centerpieces|bridal bouquet|wedding dress ideas|wedding color palette|"
              "bridesmaid dresses|wedding decor|reception ideas|wedding hair|wedding cake",
       ctas="Plan your day|Order samples|Shop bridal|Say yes", brands="Bridal|Weddings|Events"),
    _v("travel", "travel", 7, 1.8, False, (199, 399, 799, 1200), "photography outdoor-camping",
       nouns="beach resort|boutique hotel|city break|villa|cruise|ski chalet|guided tour|road trip|safari|"
             "treehouse stay|island getaway|food tour|train journey|cabin rental",
       styles="all-inclusive|luxury|budget-friendly|family-friendly|romantic|off-the-beaten-path|eco-friendly|"
              "adults-only|last-minute|scenic",
       materials="Bali|Amalfi Coast|Kyoto|Lisbon|Iceland|Tulum|Santorini|Banff|Marrakech|Cape Town|"
                 "Scottish Highlands|Costa Rica|Provence|Patagonia|Maui",
       uses="honeymoons|family vacations|long weekends|solo travelers|ski season|summer holidays|girls' trips|"
            "bucket lists|remote workers",
       benefits="Free cancellation on most stays.|Handpicked by our local travel experts.|"
                "Flights and transfers included.|Best price guaranteed or we refund the difference.|"
                "Pay in installments with no interest.",
       topics="travel itinerary|bucket list destinations|packing list|hidden gems|road trip ideas|beach vacation|"
              "Europe travel tips|weekend getaway|travel photography|honeymoon destinations",
       ctas="Book now|Plan your trip|See deals|Explore stays", brands="Travel|Escapes|Journeys"),
    _v("DIY & crafts", "diy-crafts", 7, 0.8, True, (10, 20, 35, 50), "home-decor kids-parenting holidays-events",
       nouns="macrame kit|embroidery kit|resin mold|yarn bundle|candle making kit|paint pen|vinyl sheet|glue gun|"
             "clay kit|quilting fabric|beading kit|wood burning kit|needle felting kit|sewing pattern|stencil set",
       styles="beginner-friendly|easy|handmade|upcycled|colorful|modern|no-sew|weekend|zero-waste|kid-friendly|rustic",
       materials="chunky yarn|air-dry clay|epoxy resin|cotton cord|soy wax|reclaimed wood|felt|polymer clay|"
                 "embroidery floss|washi tape|acrylic paint",
       uses="beginners|rainy afternoons|handmade gifts|craft nights|holiday decor|home makeovers|upcycling projects",
       benefits="Everything you need in one box, plus video tutorials.|Finish your first project in an afternoon.|"
                "Made with non-toxic, kid-safe materials.|Join 200,000 makers in our online community.|"
                "Refill packs sold separately.",
       topics="DIY home decor|easy crafts|macrame wall hanging|resin art|dollar store DIY|upcycled furniture|"
              "crochet pattern|DIY gifts|paper crafts|candle making",
       ctas="Start crafting|Shop kits|Get the pattern|Make it yourself", brands="Crafts|Makers|Craft Co."),
    _v("gardening", "gardening", 6, 0.9, True, (15, 30, 50, 80), "home-decor outdoor-camping diy-crafts",
       nouns="raised garden bed|seed starter kit|watering can|hanging planter|pruner|grow light|compost bin|"
             "trellis|garden hose|herb garden kit|flower bulb|garden kneeler|greenhouse",
       styles="low-maintenance|organic|heirloom|drought-tolerant|pollinator-friendly|cottage|self-watering|"
              "compact|vertical|native",
       materials="cedar|galvanized steel|terracotta|recycled plastic|bamboo|heirloom tomato|lavender|succulent|"
                 "wildflower|copper",
       uses="small balconies|raised beds|beginner gardeners|shady yards|patio containers|vegetable gardens|"
            "indoor plants|urban gardens",
       benefits="Grow your own food in as little as 30 days.|Backed by our one-year plant guarantee.|"
                "Shipped at the right time for planting in your zone.|Rot-resistant and built to last for seasons.|"
                "Perfect for beginners with zero gardening experience.",
       topics="vegetable garden layout|backyard garden ideas|container gardening|balcony garden|indoor plants|"
              "raised bed garden|cottage garden|herb garden|succulent arrangements|garden path",
       ctas="Shop garden|Start growing|Plant now", brands="Garden|Greenhouse|Growers"),
    _v("fitness", "fitness", 6, 1.0, True, (20, 40, 80, 150), "recipes womens-fashion tech-gadgets",
       nouns="yoga mat|resistance band|adjustable dumbbell|foam roller|fitness tracker|legging|sports bra|"
             "jump rope|kettlebell|workout bench|running shoe|gym bag|pilates ring",
       styles="high-waisted|sweat-wicking|non-slip|compact|home gym|beginner|pro-grade|lightweight|squat-proof|"
              "adjustable|supportive",
       materials="recycled nylon|natural rubber|cast iron|cork|neoprene|memory foam|breathable mesh|stainless steel",
       uses="home workouts|hot yoga|marathon training|small apartments|strength training|pilates at home|"
            "HIIT sessions|beginners",
       benefits="Backed by a lifetime warranty.|Free 30-day workout plan with every order.|"
                "Tested by certified personal trainers.|Folds flat to fit under the bed.|"
                "Sweat-proof and machine washable.",
       topics="home workout|ab workout|yoga for beginners|30-day fitness challenge|pilates workout|running tips|"
              "glute workout|workout plan|stretching routine|gym outfits",
       ctas="Start training|Shop gear|Get fit at home", brands="Fitness|Athletics|Active"),
    _v("kids & parenting", "kids-parenting", 5, 0.9, True, (15, 25, 40, 60), "baby diy-crafts recipes",
       nouns="activity book|puzzle|play tent|art easel|kids' backpack|lunchbox|toddler tower|reward chart|"
             "building block set|STEM kit|kids' rain boot|bedtime storybook|sensory bin|night light",
       styles="Montessori|educational|screen-free|colorful|toddler-approved|non-toxic|eco-friendly|personalized|"
              "rainbow|sturdy",
       materials="wooden|organic cotton|recycled|silicone|felt|bamboo|natural rubber|beechwood",
       uses="toddlers|preschoolers|road trips|rainy days|busy parents|school mornings|playrooms|big kids",
       benefits="Designed with early-childhood educators.|Safety tested and free of BPA and phthalates.|"
                "Grows with your child from 2 to 8 years.|Keeps little hands busy for hours.|"
                "Easy to wipe clean after messy play.",
       topics="toddler activities|kids crafts|playroom ideas|school lunch ideas|parenting tips|family activities|"
              "summer bucket list for kids|kids birthday party|sensory play|chore chart",
       ctas="Shop kids|Shop toys|Make learning fun", brands="Kids|Play|Little Ones"),
    _v("pets", "pets", 5, 0.9, True, (15, 30, 50, 80), "home-decor outdoor-camping",
       nouns="dog bed|cat tree|harness|chew toy|feeder|litter box|dog collar|treat pouch|grooming brush|"
             "pet carrier|water fountain|scratching post|dog raincoat|slow feeder bowl|pet gate",
       styles="orthopedic|calming|durable|interactive|modern|no-pull|washable|eco-friendly|cozy|adjustable|personalized",
       materials="faux fur|memory foam|natural rubber|sisal|ceramic|waterproof nylon|hemp|bamboo|leather|sherpa",
       uses="anxious dogs|indoor cats|senior dogs|puppies|heavy chewers|apartment living|multi-cat homes",
       benefits="Vet recommended and pet tested.|Removable cover goes straight in the wash.|"
                "Built tough for the most determined chewers.|Sized for every breed, from chihuahua to great dane.|"
                "Part of every order supports local shelters.",
       topics="dog room ideas|cat furniture|puppy training|DIY dog treats|pet friendly home|cat hacks|"
              "dog photos|pet care tips|cat corner|dog walking gear",
       ctas="Shop for your pet|Treat your dog|Spoil your cat", brands="Pet Co.|Paws|Pets"),
    _v("art", "art", 5, 1.0, True, (30, 60, 120, 250), "home-decor photography diy-crafts",
       nouns="art print|canvas painting|watercolor set|sketchbook|framed poster|abstract painting|oil paint set|"
             "botanical print|limited-edition print|wall art set|gouache set|easel|line drawing|ceramic sculpture",
       styles="abstract|minimalist|botanical|vintage|contemporary|colorful|moody|gallery-quality|hand-signed|"
              "Impressionist|whimsical|large-scale",
       materials="watercolor|oil|gouache|charcoal|linen canvas|acrylic|ink|archival paper|pastel|mixed media",
       uses="beginners|gallery walls|living rooms|art lovers|home studios|daily sketching|plein air painting",
       benefits="Printed on archival paper with fade-resistant inks.|Every print supports an independent artist.|"
                "Ready to hang, framing included.|Pro-grade pigments at a student price.|"
                "Each piece is signed and numbered.",
       topics="abstract art|watercolor painting ideas|painting ideas|drawing ideas|art inspiration|sketchbook ideas|"
              "acrylic painting|wall art ideas|art journal|line art",
       ctas="Shop art|Discover artists|Start painting", brands="Gallery|Art House|Prints"),
    _v("photography", "photography", 4, 1.2, True, (50, 150, 400, 900), "travel tech-gadgets art",
       nouns="mirrorless camera|prime lens|camera bag|tripod|ring light|editing preset|camera strap|film camera|"
             "photo printer|lens filter|backdrop|drone|instant camera|editing course",
       styles="beginner-friendly|professional|compact|vintage|moody|bright and airy|cinematic|lightweight|"
              "weatherproof|travel-ready",
       materials="35mm|full-frame|50mm|leather|carbon fiber|canvas|film|matte|aluminum",
       uses="travel photography|portraits|product shots|golden hour|street photography|content creators|beginners",
       benefits="Sharp results even in low light.|Learn the settings pros actually use.|"
                "Weather-sealed for shooting anywhere.|Fits in your carry-on.|"
                "Trusted by 10,000 working photographers.",
       topics="photography tips|photo poses|golden hour portraits|camera settings|film photography|photo editing|"
              "travel photos|product photography|flat lay|self portrait ideas",
       ctas="Shop cameras|Learn photography|Capture more", brands="Camera|Photo|Optics"),
    _v("architecture", "architecture", 3, 1.5, True, (500, 2000, 5000, 20000), "home-decor furniture travel",
       nouns="house plan|tiny home|modular home|backyard studio|A-frame kit|timber frame|skylight|steel window|"
             "home extension|sunroom|pivot door|prefab cabin",
       styles="modern|brutalist|mid-century|Scandinavian|minimalist|Japanese|industrial|passive house|"
              "sustainable|contemporary|Mediterranean",
       materials="concrete|timber|glass|steel|brick|cross-laminated timber|stone|cedar|corten steel",
       uses="narrow lots|sloped sites|backyard offices|cabin country|urban infill|growing families|"
            "off-grid living|coastal homes",
       benefits="Architect-designed plans you can build anywhere.|Permit-ready drawings included.|"
                "Energy efficient by design.|Prefabricated for faster, cleaner builds.|"
                "Consult with a licensed architect for free.",
       topics="modern house|architecture design|house exterior|tiny house|interior architecture|cabin design|"
              "facade ideas|brutalist architecture|house plans|modern home design",
       ctas="See the plans|Get a quote|Explore designs", brands="Architects|Design Build|Homes"),
    _v("cars", "cars", 3, 1.3, True, (20, 50, 100, 300), "tech-gadgets outdoor-camping mens-style",
       nouns="dash cam|seat cover|floor mat|detailing kit|roof rack|car vacuum|phone mount|ceramic coating|"
             "LED headlight|trunk organizer|tire inflator|steering wheel cover|jump starter|car charger",
       styles="heavy-duty|premium|universal-fit|compact|all-weather|custom-fit|rugged|sleek|pro-grade|waterproof",
       materials="leather|carbon fiber|rubber|microfiber|aluminum|neoprene|ballistic nylon",
       uses="road trips|daily commutes|off-road adventures|SUVs|pickup trucks|new drivers|winter driving|car camping",
       benefits="Installs in minutes with no tools.|Fits most cars, trucks and SUVs.|"
                "Backed by a three-year warranty.|Rated 4.8 stars by over 20,000 drivers.|"
                "Protects your interior from mud, snow and spills.",
       topics="car interior ideas|car organization|classic cars|car detailing tips|dream car|"
              "road trip car essentials|truck camping|car accessories|jeep mods|vintage car",
       ctas="Shop auto|Upgrade your ride|Drive better", brands="Auto|Motors|Garage"),
    _v("tech gadgets", "tech-gadgets", 5, 1.3, True, (25, 50, 100, 200), "photography fitness mens-style",
       nouns="wireless earbud|charging station|smart speaker|phone case|laptop stand|mechanical keyboard|e-reader|"
             "portable projector|smartwatch|power bank|desk lamp|tablet sleeve|bluetooth tracker|headset",
       styles="wireless|compact|minimalist|fast-charging|ergonomic|smart|noise-cancelling|foldable|waterproof|"
              "sleek|retro|portable",
       materials="aluminum|vegan leather|recycled plastic|silicone|walnut|MagSafe|tempered glass|fabric",
       uses="home offices|commuters|gamers|students|travel days|desk setups|remote work|smart homes",
       benefits="Charges three devices at once.|Up to 40 hours of battery life.|Works with iPhone and Android.|"
                "Two-year warranty and free returns.|Designed to keep your desk clutter-free.",
       topics="desk setup|home office ideas|tech gadgets|gaming setup|cable management|minimal desk|"
              "tech accessories|workspace inspiration|cool gadgets|smart home ideas",
       ctas="Shop tech|Upgrade your setup|Shop gadgets", brands="Tech|Labs|Electronics"),
    _v("quotes & stationery", "stationery", 4, 0.6, True, (10, 20, 30, 45), "art wedding holidays-events",
       nouns="planner|notebook|greeting card|sticker sheet|fountain pen|desk calendar|journal|washi tape set|"
             "quote print|notepad|bullet journal|gift wrap|letterpress card|pen set",
       styles="inspirational|minimalist|undated|motivational|aesthetic|hand-lettered|cute|personalized|"
              "eco-friendly|vintage",
       materials="recycled paper|linen|gold foil|vegan leather|dot grid|kraft paper|watercolor paper|cotton paper|brass",
       uses="goal setting|students|journaling|thank you notes|busy moms|new year planning|self-care routines",
       benefits="Printed on thick paper that stops bleed-through.|Personalize the cover with your name.|"
                "Thoughtfully designed to help you hit your goals.|Plastic-free packaging, always.|"
                "Lay-flat binding for easy writing.",
       topics="bullet journal ideas|inspirational quotes|motivational quotes|journal prompts|planner setup|"
              "study tips|hand lettering|quote of the day|positive affirmations|stationery haul",
       ctas="Shop stationery|Get organized|Start planning", brands="Paper Co.|Press|Stationers"),
    _v("holidays & events", "holidays-events", 6, 0.9, True, (15, 30, 50, 100), "home-decor recipes diy-crafts",
       nouns="Christmas ornament|Halloween costume|party balloon|advent calendar|string light|birthday banner|"
             "Easter basket|table setting|tree topper|party favor|stocking|faux pumpkin|wreath|photo booth prop",
       styles="festive|spooky|elegant|personalized|Nordic|classic|glam|whimsical|cozy|retro|kid-friendly",
       materials="gold foil|velvet|glitter|eucalyptus|paper|felt|glass|plaid|buffalo check|pinecone|mercury glass",
       uses="holiday parties|Christmas mornings|Halloween nights|Friendsgiving|birthday parties|baby showers|"
            "family gatherings",
       benefits="Order by the 15th for guaranteed delivery.|Reusable year after year.|"
                "Coordinated sets make decorating easy.|Personalized with names at no extra cost.|"
                "Host like a pro without the stress.",
       topics="Christmas decor|Halloween costume ideas|Thanksgiving table|birthday party ideas|holiday baking|"
              "Christmas gift ideas|Easter crafts|New Year's Eve party|fall decor|Valentine's Day ideas",
       ctas="Shop holiday|Get party ready|Celebrate now", brands="Party|Celebrations|Holiday"),
    _v("outdoor & camping", "outdoor-camping", 5, 1.1, True, (30, 60, 120, 250), "travel fitness pets",
       nouns="tent|sleeping bag|hiking boot|camp stove|backpack|hammock|headlamp|rain jacket|cooler|trekking pole|"
             "camp chair|water filter|insulated bottle|fleece jacket",
       styles="ultralight|waterproof|packable|four-season|family-size|rugged|insulated|compact|trail-ready|weatherproof",
       materials="ripstop nylon|merino wool|down|fleece|titanium|stainless steel|recycled polyester|canvas|aluminum",
       uses="backpacking trips|car camping|thru-hikes|winter camping|national parks|weekend hikes|family campouts",
       benefits="Sets up in under five minutes.|Tested on the trail by our own guides.|"
                "Packs down to the size of a water bottle.|Lifetime repairs on everything we make.|"
                "Rated to keep you warm down to 20 degrees.",
       topics="camping hacks|hiking outfit|camping checklist|national park road trip|backpacking gear|hiking trails|"
              "camping food|van life|camping essentials|outdoor adventure",
       ctas="Gear up|Shop outdoor|Get outside", brands="Outdoors|Trail Co.|Expedition"),
    _v("jewelry", "jewelry", 6, 1.4, True, (30, 60, 120, 300), "womens-fashion wedding",
       nouns="hoop earring|pendant necklace|stacking ring|charm bracelet|tennis bracelet|stud earring|"
             "engagement ring|anklet|signet ring|layered necklace|birthstone ring|huggie earring|cuff|locket",
       styles="dainty|minimalist|vintage-inspired|statement|personalized|everyday|waterproof|handmade|boho|classic|"
              "sculptural|hypoallergenic",
       materials="14k gold|sterling silver|freshwater pearl|lab-grown diamond|rose gold|gold vermeil|opal|emerald|"
                 "turquoise|moissanite",
       uses="everyday wear|bridesmaids|anniversaries|layering|birthday gifts|proposals|sensitive ears",
       benefits="Waterproof and tarnish-free for everyday wear.|Free engraving on every piece.|"
                "Ethically sourced stones and recycled metals.|Comes gift-ready in a signature box.|"
                "Lifetime warranty against breakage.",
       topics="layered necklaces|ear stack|engagement ring inspo|minimalist jewelry|jewelry organization|"
              "gold jewelry|ring stack|wedding jewelry|statement earrings|vintage rings",
       ctas="Shop jewelry|Find your ring|Gift something gold", brands="Jewelry|Fine Jewelry|Goldsmiths"),
    _v("furniture", "furniture", 6, 1.7, True, (150, 300, 600, 1200), "home-decor architecture",
       nouns="sofa|accent chair|dining table|coffee table|bed frame|bookshelf:bookshelves|sideboard|nightstand|desk|"
             "sectional|bar stool|dresser|console table|ottoman|headboard",
       styles="mid-century|modern|Scandinavian|modular|farmhouse|industrial|minimalist|curved|low-profile|vintage|"
              "Japandi|contemporary",
       materials="solid oak|walnut|boucle|rattan|velvet|marble|reclaimed wood|performance fabric|leather|cane|"
                 "travertine|powder-coated steel",
       uses="small living rooms|studio apartments|dining nooks|home offices|kids' rooms|primary bedrooms|"
            "open-plan spaces|first apartments",
       benefits="Delivered to your door and assembled in 15 minutes.|"
                "Stain-resistant fabric stands up to kids and pets.|Try it at home for 100 nights.|"
                "Kiln-dried hardwood frame built to last decades.|Free white-glove delivery.",
       topics="living room ideas|dining room decor|bedroom furniture|small space furniture|furniture flip|"
              "mid century modern living room|home office setup|sofa styling|reading chair corner|entryway bench",
       ctas="Shop furniture|Shop the collection|Find your sofa", brands="Furniture|Furnishings|Woodworks"),
    _v("baby", "baby", 4, 1.0, True, (20, 40, 80, 200), "kids-parenting home-decor",
       nouns="swaddle|crib sheet|baby carrier|stroller|diaper bag|playmat|high chair|baby monitor|teether|"
             "sleep sack|nursing pillow|bassinet|onesie|crib mobile",
       styles="organic|gender-neutral|breathable|lightweight|convertible|Montessori|gentle|muted|cozy|"
              "award-winning|hypoallergenic",
       materials="muslin|organic cotton|bamboo|merino|silicone|linen|wooden|knit|cashmere",
       uses="newborns|nurseries|first-time parents|naptime|travel with babies|baby registries|twins",
       benefits="Pediatrician approved and safety certified.|Ultra-soft fabric that gets softer with every wash.|"
                "Add it to your registry for 15% off.|Grows with baby from 0 to 24 months.|"
                "Made without harmful chemicals.",
       topics="nursery ideas|baby registry checklist|baby shower ideas|newborn essentials|gender reveal ideas|"
              "baby photoshoot|neutral nursery|baby announcement|hospital bag checklist|baby names",
       ctas="Shop baby|Build your registry|Shop nursery", brands="Baby|Nursery|Little"),
    _v("nail art", "nails", 4, 0.8, True, (8, 15, 25, 40), "beauty holidays-events",
       nouns="press-on nail set|gel polish|nail polish|cuticle oil|nail art kit|UV lamp|nail file|top coat|"
             "nail wrap|chrome powder|manicure set|base coat|nail stamper",
       styles="glossy|chip-resistant|salon-quality|long-lasting|almond|coffin|French tip|chrome|ombre|"
              "minimalist|non-toxic|neon",
       materials="gel|vegan|jojoba|crystal glass|shimmer|holographic|matte|pearl|glitter",
       uses="short nails|at-home manicures|wedding nails|vacation nails|holiday nails|weak nails|beginners",
       benefits="Lasts up to 14 days without chipping.|Applies in 10 minutes, no salon needed.|"
                "Vegan and 10-free formula.|Reusable and gentle on natural nails.|Cures in 30 seconds under LED.",
       topics="nail ideas|fall nails|French tip nails|nail art designs|summer nails|short nail designs|"
              "chrome nails|Christmas nails|almond nails|neutral nails",
       ctas="Shop nails|Try press-ons|Get the mani", brands="Nails|Lacquer|Nail Bar"),
)  # fmt: skip

COLORS = _split(
    "sage green|dusty rose|terracotta|cream|charcoal|navy|blush|mustard|olive|ivory|matte black|"
    "emerald|burgundy|cobalt blue|lavender|camel|oat|forest green"
)
SEASONS = _split(
    "spring|summer|fall|winter|holiday|back-to-school|Valentine's Day|Mother's Day|Black Friday|new year"
)
BRAND_WORDS = _split(
    "Maple|Juniper|Willow|Harbor|Cedar|Nova|Luna|Ember|Fern|Atlas|Wren|Sol|Birch|Linden|Olive|Sage|"
    "Indigo|Pebble|Marlow|Hazel|Aurora|Northwind|Meadow|Saffron|Copper|Ivy|Orchard|Tide|Ridge|Bloom|"
    "Fable|Clover|Alder|Bay|Echo|Haven|Lark|Moss|Quill|Rowan|Sparrow|Thistle|Vale|Poppy|Otis|Mabel"
)
BRAND_SUFFIXES = _split("& Co.|Studio|House|Goods|Supply|Collective|Works|Market")
# (country, weight, locales); the first locale is the common one.
COUNTRIES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("US", 30, ("en-US", "es-US")), ("CA", 6, ("en-CA", "fr-CA")), ("GB", 8, ("en-GB",)),
    ("DE", 6, ("de-DE",)), ("FR", 5, ("fr-FR",)), ("ES", 3, ("es-ES",)), ("IT", 3, ("it-IT",)),
    ("BR", 6, ("pt-BR",)), ("MX", 5, ("es-MX",)), ("AU", 4, ("en-AU",)), ("JP", 4, ("ja-JP",)),
    ("IN", 6, ("en-IN", "hi-IN")), ("NL", 2, ("nl-NL",)), ("SE", 2, ("sv-SE",)), ("IE", 1, ("en-IE",)),
    ("PL", 1, ("pl-PL",)), ("AR", 1, ("es-AR",)), ("NZ", 1, ("en-NZ",)),
)  # fmt: skip
USER_DEVICES = ("mobile", "desktop", "tablet")
USER_DEVICE_CUM_WEIGHTS = (0.65, 0.90, 1.0)

TITLES = (
    "{style} {material} {noun} for {use}",
    "shop {brand}'s {season} {noun} collection",
    "{n} {style} {nouns} under ${price}",
    "the {style} {noun} everyone is saving this {season}",
    "{material} {nouns}, {style} and {style2}",
    "new: {style} {material} {noun} by {brand}",
    "{brand} | {style} {nouns} for {use}",
    "up to {pct}% off {style} {nouns}",
    "meet the {style} {noun} made for {use}",
    "{season} edit: {style} {material} {nouns}",
    "handpicked {nouns} for {use} from {brand}",
    "everything you need for {use}: {nouns} and {noun2s}",
    "our most-loved {material} {noun} is back",
    "{style} meets {style2}: the {material} {noun}",
)
COLOR_TITLES = (
    "our best-selling {material} {noun}, now in {color}",
    "{color} {material} {noun} with {a_style} twist",
    "{style} {nouns} in {color} and {color2}",
)
INTROS = (
    "{style} {nouns} in {material}, designed for {use}.",
    "discover {style} {material} {nouns} from {brand}, made for {use}.",
    "{a_style}, {style2} take on the classic {noun}.",
    "everything you need for {use}: {nouns}, {noun2s} and more.",
    "looking for {style} {nouns}? {brand} has you covered.",
    "from {noun2s} to {nouns}, find {style} picks for {use}.",
    "our {season} collection of {style} {nouns} is here.",
    "made for {use}, our {material} {noun} is {style} and {style2}.",
)
CLOSERS = (
    "Rated {rating} stars by {k},000+ customers.",
    "Only at {brand}.",
    "Limited availability this {season}.",
    "See why pinners keep saving it.",
    "Members get early access and extra perks.",
)
TANGIBLE_CLOSERS = (
    "Free shipping on orders over ${ship}.",
    "Easy 30-day returns.",
    "Ships in 1-2 business days.",
    "Fresh {season} arrivals every week.",
    "Available in {color}, {color2} and more.",
)
OFFERS = (
    "{pct}% off",
    "up to {pct}% off",
    "{season} sale",
    "new arrivals",
    "limited edition",
    "last chance",
    "members save {pct}%",
    "{season} {nouns} are here",
    "{pct}% off {style} {nouns}",
    "only ${price}",
    "bestseller, back in stock",
)
TANGIBLE_OFFERS = ("free shipping", "free returns", "buy one, get one 50% off")
CTAS = ("shop now", "learn more", "discover more", "order today", "get yours", "see more")
CREATIVE_SEPARATORS = (" | ", " · ", ". ")

PIN_TITLES = (
    "{n} {style} {topic_base} ideas",
    "{topic_base} ideas for {use}",
    "{style} {topic} inspo",
    "my {style} {topic}",
    "{season} {topic} inspiration",
    "{topic} on a budget",
    "obsessed with this {style} {noun}",
    "the perfect {noun} for {use}",
    "{topic_base} tips for {use}",
    "{topic}, saved for later",
    "{style} and {style2} {topic_base} ideas",
)
PIN_DESCRIPTIONS = (
    "loving the {style} look of this {material} {noun}. Would be perfect for {use}.",
    "pinned for {use} inspiration. The {style} {topic_base} ideas here are so good.",
    "tried this {topic_base} idea last weekend and it turned out {result}! Great for {use}.",
    "need more {style} {nouns} in my life. Saving this one for {season}.",
    "{style} and {style2} {topic_base} ideas, all in one place. Bookmarking for {use}.",
    "obsessed with {topic} lately. {a_material} {noun} like this is next on my list.",
    "great {topic_base} tips for {use}. Love the {style} vibe!",
    "this {topic} board is everything. Anyone know where to find {a_style} {noun} like this?",
)
PIN_RESULTS = ("so well", "better than expected", "amazing", "perfect", "pretty great")
